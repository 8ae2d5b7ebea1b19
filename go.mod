module github.com/gamewire/gamewire

go 1.26.0

require (
	github.com/flynn/noise v1.1.0
	github.com/huin/goupnp v1.3.1
	github.com/libp2p/go-reuseport v0.4.0
	github.com/pion/logging v0.2.4
	github.com/pion/stun/v3 v3.1.7
	github.com/pion/transport/v4 v4.1.3
	github.com/pion/turn/v4 v4.1.4
	golang.org/x/crypto v0.58.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/pion/dtls/v3 v3.1.5 // indirect
	github.com/pion/randutil v0.1.0 // indirect
	github.com/wlynxg/anet v0.0.5 // indirect
	golang.org/x/sync v0.0.0-20210220032951-036812b2e83c // indirect
	golang.org/x/time v0.14.0 // indirect
)
