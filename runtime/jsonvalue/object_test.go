package jsonvalue

import (
	"slices"
	"testing"
)

// TestObject reads fields of each type: values, their paths in errors,
// null as not given, and the keys nothing read.
func TestObject(t *testing.T) {
	o, err := NewObject("body", []byte(`{"s": "x", "l": ["a", "b"], "b": true, "f": 0.5, "i": 1e2, "seed": -1,
		"frac": 1.5, "huge": 1e400, "n": null, "o": {"k": 3}, "bad": [1], "extra": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok, err := o.String("s"); s != "x" || !ok || err != nil {
		t.Errorf("String: %q %v %v", s, ok, err)
	}
	if l, err := o.Strings("l"); !slices.Equal(l, []string{"a", "b"}) || err != nil {
		t.Errorf("Strings: %v %v", l, err)
	}
	if b, err := o.Bool("b"); b == nil || !*b || err != nil {
		t.Errorf("Bool: %v %v", b, err)
	}
	if f, err := o.Number("f"); f == nil || *f != 0.5 || err != nil {
		t.Errorf("Number: %v %v", f, err)
	}
	if i, err := o.Int("i"); i == nil || *i != 100 || err != nil {
		t.Errorf("Int of 1e2: %v %v", i, err)
	}
	if u, err := o.Seed("seed"); u == nil || *u != 1<<64-1 || err != nil {
		t.Errorf("Seed of -1: %v %v", u, err)
	}
	if v, err := o.Int("n"); v != nil || err != nil {
		t.Errorf("null: %v %v, want not given", v, err)
	}
	inner, err := o.Object("o")
	if err != nil || inner == nil {
		t.Fatalf("Object: %v %v", inner, err)
	}
	if k, err := inner.Int("k"); k == nil || *k != 3 || err != nil {
		t.Errorf("body.o.k: %v %v", k, err)
	}
	for _, c := range []struct {
		read func() *FieldError
		want FieldError
	}{
		{func() *FieldError { _, err := o.Int("frac"); return err }, FieldError{"body.frac", "body.frac must be an integer (got 1.5)"}},
		{func() *FieldError { _, err := o.Number("huge"); return err }, FieldError{"body.huge", "body.huge is out of range (got 1e400)"}},
		{func() *FieldError { _, err := o.Strings("bad"); return err }, FieldError{"body.bad[0]", "body.bad[0] must be a string (got a number)"}},
		{func() *FieldError { _, err := inner.Bool("k"); return err }, FieldError{"body.o.k", "body.o.k must be true or false (got a number)"}},
	} {
		if err := c.read(); err == nil || *err != c.want {
			t.Errorf("%v, want %v", err, c.want)
		}
	}
	o.Skip("unused-but-known")
	if got := o.Ignored(nil); !slices.Equal(got, []string{"body.extra"}) {
		t.Errorf("ignored: %v, want [body.extra]", got)
	}
	if _, err := NewObject("x", []byte(`[1]`)); err == nil || err.Msg != "x must be an object (got an array)" {
		t.Errorf("an array as an object: %v", err)
	}
}
