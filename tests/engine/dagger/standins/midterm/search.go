package midterm

import "unicode"

// SearchMatch is one occurrence of the search query: on Row, covering the
// columns from Col up to (not including) End.
type SearchMatch struct {
	Row, Col, End int
}

// Search looks for query (ignoring case) in every row, replacing the
// previous results, and returns the number of matches. Matches on a row
// do not overlap. No match is current afterwards.
func (t *Terminal) Search(query string) int {
	t.SearchClear()
	needle := []rune(query)
	for i, r := range needle {
		needle[i] = unicode.ToLower(r)
	}
	if len(needle) == 0 {
		return 0
	}
	for row, line := range t.Content {
		for col := 0; col+len(needle) <= len(line); {
			if matchAt(line, col, needle) {
				t.SearchMatches = append(t.SearchMatches,
					SearchMatch{Row: row, Col: col, End: col + len(needle)})
				col += len(needle)
			} else {
				col++
			}
		}
	}
	return len(t.SearchMatches)
}

func matchAt(line []rune, col int, needle []rune) bool {
	for i, r := range needle {
		if unicode.ToLower(line[col+i]) != r {
			return false
		}
	}
	return true
}

// SearchClear forgets the search results.
func (t *Terminal) SearchClear() {
	t.SearchMatches = nil
	t.searchCurrent = -1
}

// SearchSetCurrent makes match idx the current one and returns its row and
// column. An index out of range clears the current match and returns -1, -1.
func (t *Terminal) SearchSetCurrent(idx int) (row, col int) {
	if idx < 0 || idx >= len(t.SearchMatches) {
		t.searchCurrent = -1
		return -1, -1
	}
	t.searchCurrent = idx
	m := t.SearchMatches[idx]
	return m.Row, m.Col
}

// SearchMatchRows returns each row that holds a match, once, in order.
func (t *Terminal) SearchMatchRows() []int {
	var rows []int
	for _, m := range t.SearchMatches {
		if len(rows) == 0 || rows[len(rows)-1] != m.Row {
			rows = append(rows, m.Row)
		}
	}
	return rows
}
