package model

// Splits reports whether Forward would run b in parts on s.
func Splits(s *State, b *Batch) bool { return s.parts != nil && s.split(b) != nil }
