package sample

import "strings"

// StopMatcher finds stop strings in text that arrives in pieces (the
// decoded text of each new token) and says what may be shown so far.
//
// Generation stops as soon as the text contains a stop string: at the
// earliest position where one ends, cut where it starts (the longest, if
// several end there). So the result does not depend on how the text was
// split into pieces. The text returned ends before the stop string.
// Text that may be the beginning of a stop string (a suffix that is a
// proper prefix of one) is held back until the next pieces show that it
// is not, or until Flush.
//
// Matching is on bytes. Tokens that decode to valid UTF-8 and UTF-8 stop
// strings give cuts on rune boundaries, since a stop string starts with
// a rune's first byte. A StopMatcher is not safe for concurrent use.
type StopMatcher struct {
	stops   []string
	maxLen  int    // the longest stop string's length
	held    string // pushed text not yet emitted
	stopped bool
	matched string
}

// NewStopMatcher returns a matcher for stops. Empty strings are ignored
// (Params.Validate refuses them). With no stop strings, Push returns its
// text at once.
func NewStopMatcher(stops []string) *StopMatcher {
	m := &StopMatcher{}
	for _, s := range stops {
		if s == "" {
			continue
		}
		m.stops = append(m.stops, s)
		m.maxLen = max(m.maxLen, len(s))
	}
	return m
}

// Push adds the next piece of text. It returns the text that is now safe
// to show, and whether a stop string was reached; then emit ends before
// it, and later Pushes return ("", true).
func (m *StopMatcher) Push(text string) (emit string, stopped bool) {
	if m.stopped {
		return "", true
	}
	if len(m.stops) == 0 {
		return text, false
	}
	buf := m.held + text

	// The held text holds no whole stop string, so any occurrence found
	// here ends in the new text. For one stop string the first
	// occurrence also ends first.
	end, start := -1, -1
	for _, s := range m.stops {
		i := strings.Index(buf, s)
		if i < 0 {
			continue
		}
		if e := i + len(s); end < 0 || e < end || e == end && i < start {
			end, start, m.matched = e, i, s
		}
	}
	if end >= 0 {
		m.stopped = true
		m.held = ""
		return buf[:start], true
	}

	// Hold back the longest suffix that a stop string starts with. It is
	// shorter than the longest stop string, which bounds the search.
	j := max(0, len(buf)-(m.maxLen-1))
	for ; j < len(buf); j++ {
		if m.couldStart(buf[j:]) {
			break
		}
	}
	m.held = buf[j:]
	return buf[:j], false
}

// couldStart reports whether some stop string starts with suf (and is
// longer: a whole match was ruled out already).
func (m *StopMatcher) couldStart(suf string) bool {
	for _, s := range m.stops {
		if len(s) > len(suf) && strings.HasPrefix(s, suf) {
			return true
		}
	}
	return false
}

// Flush returns the text held back, for when generation ended for another
// reason (EOS, max_new_tokens): it was not the start of a stop string
// after all. After a stop it returns "". A Push after Flush starts anew.
func (m *StopMatcher) Flush() string {
	h := m.held
	m.held = ""
	return h
}

// Matched returns the stop string that was reached, or "" if none was.
func (m *StopMatcher) Matched() string { return m.matched }
