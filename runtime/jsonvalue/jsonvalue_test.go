package jsonvalue

import "testing"

func TestValues(t *testing.T) {
	for raw, want := range map[string]string{"{}": "an object", " [1]": "an array", `"x"`: "a string", "true": "a boolean", "null": "null", "-1.5": "a number", "  ": "nothing"} {
		if got := Kind([]byte(raw)); got != want {
			t.Errorf("Kind(%q) = %q, want %q", raw, got, want)
		}
	}
	for _, c := range []struct {
		raw string
		n   int64
		ok  bool
	}{{"100", 100, true}, {"100.0", 100, true}, {"1e2", 100, true}, {"-9223372036854775808", -1 << 63, true},
		{"1.5", 0, false}, {"9223372036854775808", 0, false}, {"-9223372036854775809", 0, false}, {`"3"`, 0, false}, {"1e300", 0, false}} {
		if n, ok := WholeNumber([]byte(c.raw)); n != c.n || ok != c.ok {
			t.Errorf("WholeNumber(%s) = %d, %v; want %d, %v", c.raw, n, ok, c.n, c.ok)
		}
	}
	for _, c := range []struct {
		raw string
		u   uint64
		ok  bool
	}{{"7", 7, true}, {"18446744073709551615", 1<<64 - 1, true}, {"-1", 1<<64 - 1, true}, {"1.8e19", 18000000000000000000, true},
		{"1.5", 0, false}, {"2e19", 0, false}, {"true", 0, false}} {
		if u, ok := Seed([]byte(c.raw)); u != c.u || ok != c.ok {
			t.Errorf("Seed(%s) = %d, %v; want %d, %v", c.raw, u, ok, c.u, c.ok)
		}
	}
	if got := Clip([]byte(" " + string(make([]byte, 50)))); len(got) != 43 {
		t.Errorf("Clip kept %d bytes, want 40 and ...", len(got))
	}
}
