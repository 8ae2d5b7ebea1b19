package portmap_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/gamewire/gamewire/nat/portmap"
)

// A node maps its main socket once it is bound, offers the external
// address as a candidate, hears of changes, and deletes the mapping when
// it closes. (Not run: it needs a router that maps ports.)
func Example() {
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		log.Fatal(err)
	}
	defer sock.Close()

	c, err := portmap.New(portmap.Config{
		LocalPort: uint16(sock.LocalAddr().(*net.UDPAddr).Port),
		OnChange: func(m portmap.Mapping) {
			if m.Valid() {
				fmt.Println("candidate moved to", m.External)
			} else {
				fmt.Println("candidate lost:", m.Protocol)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.Close(ctx) // deletes the mapping
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Map(ctx)
	if err != nil {
		fmt.Println("no port mapping:", err) // relay or punch as before
		return
	}
	fmt.Printf("candidate %v via %s, renewed until Close\n", m.External, m.Protocol)
}
