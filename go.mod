module github.com/gamewire/gamewire

go 1.26.0

require (
	github.com/flynn/noise v1.1.0
	golang.org/x/crypto v0.58.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)
