package sample

import (
	"strings"
	"testing"
)

// pushAll pushes the pieces and returns what was emitted after each push,
// whether it stopped, and Flush's text.
func pushAll(m *StopMatcher, pieces []string) (emits []string, stopped bool, flushed string) {
	for _, p := range pieces {
		e, s := m.Push(p)
		emits = append(emits, e)
		stopped = s
	}
	return emits, stopped, m.Flush()
}

func TestStopMatcher(t *testing.T) {
	cases := []struct {
		name    string
		stops   []string
		pieces  []string
		emits   []string
		stopped bool
		flushed string
		matched string
	}{
		{"no stop strings", nil, []string{"a", "</s>", "b"}, []string{"a", "</s>", "b"}, false, "", ""},
		{"split across pushes", []string{"</s>"}, []string{"Hello <", "/", "s> world"},
			[]string{"Hello ", "", ""}, true, "", "</s>"},
		{"held, then not a stop", []string{"</s>"}, []string{"a<", "b", "</", "x"},
			[]string{"a", "<b", "", "</x"}, false, "", ""},
		{"held until Flush", []string{"</s>"}, []string{"Hello </"},
			[]string{"Hello "}, false, "</", ""},
		{"stop at the very start", []string{"</s>"}, []string{"</s>", "more"},
			[]string{"", ""}, true, "", "</s>"},
		{"stop inside one push", []string{"STOP"}, []string{"abcSTOPdef"},
			[]string{"abc"}, true, "", "STOP"},
		// "aab" after "aa": "aaa" is no prefix, its suffix "aa" is.
		{"overlapping prefix", []string{"aab"}, []string{"a", "a", "a", "b"},
			[]string{"", "", "a", ""}, true, "", "aab"},
		{"self-overlapping stop", []string{"abab"}, []string{"aba", "bab"},
			[]string{"", ""}, true, "", "abab"},
		{"multiple stops, first to end wins", []string{"\n\n", "User:"}, []string{"Hi\nUs", "er: x\n\n"},
			[]string{"Hi\n", ""}, true, "", "User:"},
		// "bc" ends before "abcd" does: it wins, however the text is cut.
		{"earliest end, one push", []string{"abcd", "bc"}, []string{"abcd"},
			[]string{"a"}, true, "", "bc"},
		{"earliest end, byte by byte", []string{"abcd", "bc"}, []string{"a", "b", "c", "d"},
			[]string{"", "", "a", ""}, true, "", "bc"},
		// Both end together: cut at the earlier start (the longer one).
		{"same end, longer wins", []string{"bc", "abc"}, []string{"xabc"},
			[]string{"x"}, true, "", "abc"},
		{"empty stop ignored", []string{"", "Z"}, []string{"ab", "cZ"},
			[]string{"ab", "c"}, true, "", "Z"},
		{"UTF-8", []string{"。"}, []string{"你好", "。再见"},
			[]string{"你好", ""}, true, "", "。"},
		{"UTF-8 prefix held", []string{"。"}, []string{"你好\xe3", "\x80", "\x82"},
			[]string{"你好", "", ""}, true, "", "。"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewStopMatcher(c.stops)
			emits, stopped, flushed := pushAll(m, c.pieces)
			if strings.Join(emits, "|") != strings.Join(c.emits, "|") || stopped != c.stopped || flushed != c.flushed {
				t.Errorf("emits %q stopped %v flushed %q, want %q %v %q", emits, stopped, flushed, c.emits, c.stopped, c.flushed)
			}
			if m.Matched() != c.matched {
				t.Errorf("Matched() = %q, want %q", m.Matched(), c.matched)
			}
		})
	}
}

func TestStopMatcherPushAfterFlush(t *testing.T) {
	m := NewStopMatcher([]string{"ab"})
	if e, _ := m.Push("xa"); e != "x" {
		t.Fatalf("Push = %q", e)
	}
	if f := m.Flush(); f != "a" {
		t.Fatalf("Flush = %q", f)
	}
	// The held "a" was flushed, so "b" does not complete "ab".
	if e, s := m.Push("b"); e != "b" || s {
		t.Errorf("Push after Flush = %q, %v; want \"b\", false", e, s)
	}
}

// firstStop is the definition, byte by byte: the first prefix of text
// that ends with a stop string, cut where the longest such stop starts.
func firstStop(text string, stops []string) (cut int, ok bool) {
	for e := 1; e <= len(text); e++ {
		cut = -1
		for _, s := range stops {
			if s != "" && strings.HasSuffix(text[:e], s) && (cut < 0 || e-len(s) < cut) {
				cut = e - len(s)
			}
		}
		if cut >= 0 {
			return cut, true
		}
	}
	return len(text), false
}

// FuzzStopMatcher pushes text cut into pieces (cuts gives their lengths)
// and checks the invariants: after every push, the emitted and held text
// is exactly what was pushed (held text is a proper prefix of some stop
// string); emitted text never contains a stop string; and the result is
// firstStop's, whatever the cuts.
func FuzzStopMatcher(f *testing.F) {
	f.Add("Hello world</s> more", "</s>", "", "", []byte{3, 5, 1, 1, 2})
	f.Add("User: hi\n\nAssistant:", "\n\n", "User:", "Assistant:", []byte{1})
	f.Add("aaab", "aab", "", "", []byte{1, 1, 1, 1})
	f.Add("ababab", "abab", "bab", "", []byte{2, 1, 3})
	f.Add("abcd", "abcd", "bc", "", []byte{4})
	f.Add("xabc", "bc", "abc", "", []byte{1, 2})
	f.Add("你好。再见", "。", "再", "", []byte{4, 1, 1, 7})
	f.Add("no stop here at all", "zzz", "stop!", "", []byte{0, 3, 0, 9})
	f.Fuzz(func(t *testing.T, text, s1, s2, s3 string, cuts []byte) {
		stops := []string{s1, s2, s3}
		m := NewStopMatcher(stops)
		var out strings.Builder
		pos := 0
		stopped := false
		for i := 0; pos < len(text) && !stopped; i++ {
			n := len(text) - pos
			if i < len(cuts) {
				n = min(n, int(cuts[i]))
			}
			e, s := m.Push(text[pos : pos+n])
			pos += n
			out.WriteString(e)
			stopped = s
			for _, st := range stops {
				if st != "" && strings.Contains(out.String(), st) {
					t.Fatalf("emitted %q contains stop %q", out.String(), st)
				}
			}
			if !stopped {
				if out.String()+m.held != text[:pos] {
					t.Fatalf("emitted %q + held %q != pushed %q", out.String(), m.held, text[:pos])
				}
				if m.held != "" && !m.couldStart(m.held) {
					t.Fatalf("held %q is no proper prefix of a stop string %q", m.held, stops)
				}
			}
		}
		cut, ok := firstStop(text, stops)
		if stopped != ok {
			t.Fatalf("stopped %v, want %v", stopped, ok)
		}
		if !stopped {
			out.WriteString(m.Flush())
		} else if !strings.HasPrefix(text[cut:], m.Matched()) || m.Matched() == "" {
			t.Fatalf("Matched() = %q, not at %d in %q", m.Matched(), cut, text)
		}
		if out.String() != text[:cut] {
			t.Fatalf("output %q, want %q", out.String(), text[:cut])
		}
	})
}
