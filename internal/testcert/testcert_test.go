package testcert

import (
	"crypto/tls"
	"net"
	"testing"
)

// TestHandshake: a client trusting the pool completes a handshake with a
// server using the certificate; one without the pool does not.
func TestHandshake(t *testing.T) {
	cert, pool, err := New("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(cfg *tls.Config) error {
		c, err := tls.DialWithDialer(&net.Dialer{}, "tcp4", ln.Addr().String(), cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}); err != nil {
		t.Errorf("trusted: %v", err)
	}
	if err := dial(&tls.Config{ServerName: "127.0.0.1"}); err == nil {
		t.Error("untrusted certificate accepted")
	}
}
