// Package leakcheck fails a test that leaves goroutines running: networking
// code must stop every goroutine it starts by the time it is closed.
package leakcheck
