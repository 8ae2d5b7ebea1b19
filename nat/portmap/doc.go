// Package portmap asks the home router for a UDP port mapping with PCP
// (RFC 6887), NAT-PMP (RFC 6886) or UPnP IGD (WANIPConnection:1/2,
// WANPPPConnection:1), so that a node behind a NAT that maps each
// destination to another port (a symmetric NAT, where hole punching
// fails) still has one external address:port every peer can send to.
//
// # Use
//
//	c, err := portmap.New(portmap.Config{LocalPort: port}) // the bound socket's port
//	m, err := c.Map(ctx)          // m.External is the candidate
//	...                           // Config.OnChange hears of changes
//	err = c.Close(closeCtx)       // deletes the mapping
//
// New sends nothing. Map finds the gateway (Config.Gateway, else the IPv4
// default route's next hop: /proc/net/route on Linux; elsewhere Gateway
// must be set), and with more than one protocol configured first asks the
// gateway about all of them at once (Probe: a PCP ANNOUNCE, a NAT-PMP
// external address request, UPnP discovery), then maps with the first
// protocol, in Config.Protocols order (PCP, NAT-PMP, UPnP by default),
// that answered. After the first success the Client owns one goroutine
// that renews the mapping at half its granted lifetime, makes a new one
// if it is lost, and reports changes to Config.OnChange; Close ends that
// goroutine, waits for it, and deletes the mapping, bounded by its
// context. A node would start the Client once its main socket is bound,
// add Map's result (and OnChange's) to its candidates, and Close it with
// a bounded context when it closes; a new local port needs a new Client.
//
// Mappings are for IPv4 and UDP only. The external address is reported
// as the gateway states it: it may be private or shared when the router
// is itself behind another NAT; the client does not refuse a gateway for
// that, nor for an IGD whose status says it is disconnected (miniupnpd
// behind a STUN-learnt address reports either), and leaves judging the
// candidate to its user.
//
// # Libraries
//
// UPnP uses github.com/huin/goupnp (maintained; its latest release is
// pinned) for the device description types and its generated
// WANIPConnection / WANPPPConnection SOAP clients, but not for discovery
// or fetching: goupnp's discovery multicasts from every interface and
// fetches whatever LOCATION any responder names, and its description
// fetch uses a package-wide HTTP client without a size limit. Here the
// client sends its own M-SEARCH, accepts answers only from the gateway's
// address, fetches only URLs that are plain HTTP to that address (which
// must be private, link-local or loopback), and gives goupnp's SOAP
// clients its own HTTP client: Config.Dial, no proxy, no redirects, no
// kept connections, 16 KiB of headers, 256 KiB descriptions, 64 KiB SOAP
// answers (longer ones fail with ErrTooLarge rather than being cut), 5 s
// per request.
//
// PCP and NAT-PMP are written here from their RFCs. No maintained Go PCP
// client exists; github.com/jackpal/go-nat-pmp has no context support,
// no way to supply the socket (which tests and network namespaces need),
// and no PCP, and both protocols share a port, a retransmission loop and
// the version fallback between them (a NAT-PMP-only server answers a PCP
// request with version 0 "unsupported version"), which is a few hundred
// lines in all.
//
// # Wire formats (all integers big-endian)
//
// PCP request header (RFC 6887 §7.1), 24 bytes:
//
//	0      version = 2
//	1      R = 0 (bit 7) | opcode (0 ANNOUNCE, 1 MAP)
//	2-3    reserved, 0
//	4-7    requested lifetime, seconds (0 deletes a MAP)
//	8-23   PCP client's IP address (IPv4 as ::ffff:a.b.c.d): must be
//	       the request's source address, or the server answers
//	       ADDRESS_MISMATCH
//
// PCP response header (§7.2), 24 bytes:
//
//	0      version = 2
//	1      R = 1 (bit 7) | opcode
//	2      reserved
//	3      result code (0 SUCCESS, 1 UNSUPP_VERSION, 2 NOT_AUTHORIZED,
//	       3 MALFORMED_REQUEST, 4 UNSUPP_OPCODE, ..., 8 NO_RESOURCES,
//	       11 CANNOT_PROVIDE_EXTERNAL, 12 ADDRESS_MISMATCH)
//	4-7    lifetime: granted (success), or how long the error lasts
//	8-11   epoch time, seconds since the server's state began
//	12-23  reserved
//
// MAP opcode payload (§11.1), 36 bytes after either header; the response
// repeats the request's nonce, protocol and internal port:
//
//	0-11   mapping nonce: random, kept for renewals and the deletion
//	12     protocol (17 = UDP)
//	13-15  reserved
//	16-17  internal port
//	18-19  suggested (request) / assigned (response) external port
//	20-35  suggested / assigned external IP address (::ffff:0.0.0.0:
//	       no preference)
//
// Options may follow (none are sent); messages are at most 1100 bytes and
// a multiple of 4.
//
// NAT-PMP (RFC 6886 §3.2, §3.3), version 0. External address request, 2
// bytes: version 0, opcode 0. Its response, 12 bytes:
//
//	0      version = 0
//	1      opcode = 128 + 0
//	2-3    result code (0 Success, 1 Unsupported Version, 2 Not
//	       Authorized/Refused, 3 Network Failure, 4 Out of resources,
//	       5 Unsupported opcode)
//	4-7    seconds since start of epoch
//	8-11   external IPv4 address
//
// Mapping request, 12 bytes:
//
//	0      version = 0
//	1      opcode (1 UDP, 2 TCP)
//	2-3    reserved, 0
//	4-5    internal port
//	6-7    suggested external port (0 with lifetime 0: delete)
//	8-11   requested lifetime, seconds
//
// Its response, 16 bytes:
//
//	0      version = 0
//	1      opcode = 128 + request opcode
//	2-3    result code
//	4-7    seconds since start of epoch
//	8-9    internal port
//	10-11  mapped external port
//	12-15  granted lifetime, seconds
//
// Error answers may be shorter (an "unsupported version" answer is 8
// bytes); they are taken once version, opcode and result code are there.
//
// # Retransmission and trust
//
// PCP and NAT-PMP requests go from a UDP socket connected to the
// gateway's port 5351, so only the gateway's datagrams are read and an
// ICMP port unreachable ends the attempt at once (ErrNoResponse). A
// request is sent at 0, 250, 750 and 1750 ms (RFC 6886's 250 ms doubling
// schedule, cut at four sends: 3.75 s) unless ctx ends first. Datagrams
// that are not the answer (too short or long, another version or opcode,
// another nonce, protocol or internal port) are dropped and counted in
// Stats.Dropped and the wait goes on; an answer with an error result ends
// it with a *ResultError. Gateway epochs are not checked and ANNOUNCE
// messages from the gateway (port 5350) are not listened for: a gateway
// that lost its state is noticed at the next renewal, which re-creates
// the mapping, and OnChange reports it if its port changed.
//
// UPnP discovery multicasts an M-SEARCH for
// urn:schemas-upnp-org:device:InternetGatewayDevice:1 to
// 239.255.255.250:1900 and sends it to the gateway's port 1900 too (at 0,
// 250 and 750 ms, answers awaited for 2 s). Only answers from the
// gateway's address count; see Libraries for what is fetched. With
// WANIPConnection:2 the first mapping is AddAnyPortMapping (the gateway
// may pick another port than the local one); otherwise AddPortMapping
// with the local port, then up to three random ports on
// ConflictInMappingEntry (718), and lease 0 for a gateway that keeps only
// permanent mappings (725). Renewals repeat AddPortMapping with the
// external port held; deletion is DeletePortMapping.
package portmap
