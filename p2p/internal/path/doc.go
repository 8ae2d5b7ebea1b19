// Package path is a node's path layer: for each peer, the route its
// session sends on (the peer's address and the socket that reaches it) and
// the choice among the routes NAT traversal, the peer's own packets, the
// relay and TCP links offer.
//
// # Ownership
//
// One goroutine, the Table's owner, changes every peer's route and the
// chooser behind it. Everyone else posts events: the reader (Heard: the
// peer's authenticated packet came from another route), the traversal
// (Validate: a connectivity check proved a route), the relay and TCP
// links (Offer), and sessions (Begin, Establish). Posting appends to a
// bounded queue under a leaf lock and never blocks, so a caller holding
// any lock cannot deadlock with the owner; the owner reports each change
// to a Reporter with no lock held. The node runs the rest of its per-peer
// path work on the same goroutine (Do, Must): one goroutine changes all of
// a peer's path state, in the order it was posted. Route is an atomic
// pointer to an immutable Route: the data path reads it without a lock,
// and never sees one path's address with another's socket.
//
// # Choice
//
// Routes fall in classes, best first: UDP to one of our subnets, UDP to a
// private or loopback address, UDP to a public address, a TCP link, the
// relay. A route replaces the current one when
//
//   - it is of a better class;
//   - it is of the same class and the current route is failing (what was
//     sent is unacknowledged 200 ms past its due time, or the peer has
//     been silent on it for a second), or, in the first 2 s after the
//     session was established, a connectivity check validated it with a
//     higher priority, or its checks beat the current route's smoothed
//     RTT by 20 % and 5 ms twice, a second apart;
//   - it is of a worse class and the peer has been silent on the current
//     route for a second.
//
// Except for a better class (or a better check while settling), a route
// moved to is kept for at least 500 ms: data sent on the old route is
// still unacknowledged right after a move and stragglers still arrive
// from it, which would otherwise swing the session back.
//
// An offer refused stays pending: every 50 ms, for 3 s after it was last
// made, it is considered again with the current route's health then
// (Reporter.Health), so a session whose route fails moves to where the
// peer was last heard without waiting for the peer's next packet, which
// after a NAT rebinding may be seconds away.
//
// ::1 and an IPv4 loopback address with the same port are one route, as
// are an IPv4-mapped address and its IPv4 address. A peer's route moves
// at most 6 times in any minute unless the current route is failing;
// moves past the bound are counted (Stats.Suppressed).
package path
