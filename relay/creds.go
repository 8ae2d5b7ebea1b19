package relay

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

var netErrClosed = net.ErrClosed

// DefaultCredentialTTL is how long issued credentials stay valid. A TURN
// server checks them on every refresh, so they must outlast the longest
// session expected to need the relay.
const DefaultCredentialTTL = 12 * time.Hour

// Credentials are TURN long-term credentials in coturn's use-auth-secret
// format.
type Credentials struct {
	Username string // "expiry:user"
	Password string // base64(HMAC-SHA1(secret, Username))
}

// NewCredentials issues credentials for user, valid until now+ttl.
func NewCredentials(secret, user string, ttl time.Duration, now time.Time) Credentials {
	u := strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + user
	return Credentials{Username: u, Password: password(secret, u)}
}

func password(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Expires returns when the credentials stop being accepted.
func (c Credentials) Expires() (time.Time, error) {
	ts, _, ok := strings.Cut(c.Username, ":")
	if !ok {
		return time.Time{}, fmt.Errorf("relay: username %q is not expiry:user", c.Username)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("relay: username %q: %w", c.Username, err)
	}
	return time.Unix(sec, 0), nil
}

// Valid reports whether c was issued under secret and has not expired.
func (c Credentials) Valid(secret string, now time.Time) bool {
	exp, err := c.Expires()
	if err != nil || !now.Before(exp) {
		return false
	}
	return hmac.Equal([]byte(c.Password), []byte(password(secret, c.Username)))
}
