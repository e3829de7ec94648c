package batch_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/leo-operator/leo/runtime/batch"
)

// Cut anywhere, a journal opens with exactly its whole records, and the
// file is truncated to them, ready for the next append.
func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	j, recs, torn, err := batch.OpenJournal(path)
	if err != nil || len(recs) != 0 || torn != 0 {
		t.Fatal(err, recs, torn)
	}
	want := [][]byte{[]byte("one"), {}, []byte("three, longer")}
	var ends []int
	size := 0
	for _, p := range want {
		if err := j.Append(p); err != nil {
			t.Fatal(err)
		}
		size += 8 + len(p)
		ends = append(ends, size)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for cut := 0; cut <= len(full); cut++ {
		for _, flip := range []bool{false, true} {
			data := slices.Clone(full[:cut])
			if flip && cut > 0 {
				data[cut-1] ^= 0x40 // a damaged last byte
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			j, recs, torn, err := batch.OpenJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for n < len(ends) && ends[n] <= cut && (!flip || ends[n] != cut) {
				n++
			}
			if fmt.Sprint(recs) != fmt.Sprint(want[:n]) {
				t.Fatalf("cut %d flip %v: records %q, want %q", cut, flip, recs, want[:n])
			}
			good := 0
			if n > 0 {
				good = ends[n-1]
			}
			if torn != int64(cut-good) {
				t.Fatalf("cut %d: torn %d, want %d", cut, torn, cut-good)
			}
			if err := j.Append([]byte("next")); err != nil {
				t.Fatal(err)
			}
			_ = j.Close()
			data, _ = os.ReadFile(path)
			if again, _ := batch.ParseJournal(data); len(again) != n+1 || string(again[n]) != "next" {
				t.Fatalf("cut %d: after an append, %q", cut, again)
			}
		}
	}
}

func TestPlan(t *testing.T) {
	files := []string{"a", "b", "c", "d", "e", "f", "g"}
	got := fmt.Sprint(batch.Plan(files, 2, 0, 3), batch.Plan(files, 2, 1, 3), batch.Plan(files, 1, 0, 10))
	if want := "[{0 [a c e]} {1 [g]}] [{0 [b d f]}] [{0 [a b c d e f g]}]"; got != want {
		t.Errorf("plans %s, want %s", got, want)
	}
	if id := (batch.MiniBatch{Index: 4}).ID(2); id != "2-4" {
		t.Errorf("id %q", id)
	}
}
