package p2p

import (
	"testing"

	"github.com/gamewire/gamewire/internal/secure"
)

func TestPayloadSizesMatchSecure(t *testing.T) {
	if initPayloadLen != secure.InitiationPayloadLen || respPayloadLen != secure.ResponsePayloadLen {
		t.Fatalf("payload sizes %d/%d, secure wants %d/%d", initPayloadLen, respPayloadLen,
			secure.InitiationPayloadLen, secure.ResponsePayloadLen)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	ip := initPayload{version: protocolVersion, app: appHash("game"), timestamp: 1 << 60, epoch: 12345}
	got, err := decodeInitPayload(ip.encode())
	if err != nil || got != ip {
		t.Fatalf("%+v %v", got, err)
	}
	rp := respPayload{status: statusRefused, flags: respAccepted, epoch: 99}
	gotR, err := decodeRespPayload(rp.encode())
	if err != nil || gotR != rp {
		t.Fatalf("%+v %v", gotR, err)
	}
	if _, err := decodeInitPayload(make([]byte, 39)); err == nil {
		t.Error("short initiation payload accepted")
	}
	bad := rp.encode()
	bad[0] = 9
	if _, err := decodeRespPayload(bad); err == nil {
		t.Error("unknown status accepted")
	}
	if appHash("a") == appHash("b") || appHash("") == appHash("a") {
		t.Error("app hashes collide")
	}
}

func FuzzPayloads(f *testing.F) {
	f.Add(initPayload{version: 1, epoch: 3}.encode())
	f.Add(respPayload{status: 1, epoch: 3}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := decodeInitPayload(b); err == nil {
			if q, err := decodeInitPayload(p.encode()); err != nil || q != p {
				t.Fatalf("init payload round trip: %+v %+v %v", p, q, err)
			}
		}
		if p, err := decodeRespPayload(b); err == nil {
			if q, err := decodeRespPayload(p.encode()); err != nil || q != p {
				t.Fatalf("response payload round trip: %+v %+v %v", p, q, err)
			}
		}
	})
}
