package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// keyring checks API keys. It holds their SHA-256 digests and compares
// digests, so that the comparison takes the same time whatever the keys'
// and the guess's lengths, and checks every key, without stopping at a
// match, so that the time does not tell which key (or how many) matched.
type keyring [][sha256.Size]byte

func newKeyring(keys []string) keyring {
	k := make(keyring, 0, len(keys))
	for _, key := range keys {
		k = append(k, sha256.Sum256([]byte(key)))
	}
	return k
}

// check returns nil when r carries a valid "Authorization: Bearer <key>"
// or no keys are set, else a 401.
func (k keyring) check(r *http.Request) *apiError {
	if len(k) == 0 {
		return nil
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return &apiError{Status: http.StatusUnauthorized, Type: typeAuth, Code: "invalid_api_key",
			Message: "missing API key: send the header \"Authorization: Bearer <key>\" with one of the endpoint's keys"}
	}
	guess := sha256.Sum256([]byte(strings.TrimSpace(token)))
	match := 0
	for i := range k {
		match |= subtle.ConstantTimeCompare(guess[:], k[i][:])
	}
	if match != 1 {
		return &apiError{Status: http.StatusUnauthorized, Type: typeAuth, Code: "invalid_api_key",
			Message: "invalid API key: the key in the Authorization header is not one of the endpoint's keys"}
	}
	return nil
}
