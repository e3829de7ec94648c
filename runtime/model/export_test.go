package model

// Splits reports whether Forward would run b in parts on s.
func Splits(s *State, b *Batch) bool { return s.parts != nil && s.split(b) != nil }

// Cuts returns where Forward would cut b (the end of each part), or nil.
func Cuts(s *State, b *Batch) []int {
	if s.parts == nil {
		return nil
	}
	return append([]int(nil), s.split(b)...)
}
