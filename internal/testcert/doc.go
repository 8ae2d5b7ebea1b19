// Package testcert makes throwaway TLS certificates for tests: a
// self-signed certificate for the given IP addresses and names, and a pool
// that trusts it. Nothing outside tests should use it.
package testcert
