// Package midterm is a small stand-in for github.com/vito/midterm, written
// for a probe build of dagger v0.21.8. It provides only what dagger's
// non-test code uses. It is a line buffer, not a terminal emulator: text
// is kept row by row, \n starts a new row, \r returns to column 0, \b
// steps back, tabs expand to 8-column stops, and every escape sequence
// (CSI, OSC, DCS/APC/PM/SOS strings, two-byte ESC sequences) is dropped.
package midterm

import "unicode/utf8"

// Terminal is a grid of rows written to through Write.
type Terminal struct {
	// Content holds one slice of runes per row. Rows are not padded.
	Content [][]rune

	// AutoResizeX means rows never wrap. ResizeX turns it off.
	AutoResizeX bool

	// SearchMatches holds the results of the last Search, ordered by row
	// and then column.
	SearchMatches []SearchMatch

	width   int
	row     int
	col     int
	state   parseState
	partial []byte // an incomplete UTF-8 sequence left by the last Write

	searchCurrent int
}

type parseState int

const (
	stText       parseState = iota
	stEsc                   // after ESC
	stEscInter              // after ESC and an intermediate byte: one more to go
	stCSI                   // inside ESC [ ... final
	stString                // inside OSC/DCS/SOS/PM/APC, until BEL or ST
	stStringEsc             // ESC seen inside a string: ST if followed by '\'
)

// NewAutoResizingTerminal returns an empty terminal whose rows never wrap.
func NewAutoResizingTerminal() *Terminal {
	return &Terminal{AutoResizeX: true, searchCurrent: -1}
}

// ResizeX sets a fixed width; later output wraps at it. Existing rows are
// left as they are.
func (t *Terminal) ResizeX(width int) {
	t.width = width
	t.AutoResizeX = false
}

// UsedHeight is the number of rows holding output (a trailing newline
// does not count as a row of its own).
func (t *Terminal) UsedHeight() int {
	return len(t.Content)
}

// Write feeds output to the terminal. It never fails.
func (t *Terminal) Write(p []byte) (int, error) {
	n := len(p)
	buf := p
	if len(t.partial) > 0 {
		buf = append(t.partial, p...)
		t.partial = nil
	}
	for len(buf) > 0 {
		if !utf8.FullRune(buf) {
			t.partial = append([]byte(nil), buf...)
			break
		}
		r, size := utf8.DecodeRune(buf)
		buf = buf[size:]
		t.feed(r)
	}
	return n, nil
}

func (t *Terminal) feed(r rune) {
	switch t.state {
	case stText:
		t.text(r)
	case stEsc:
		switch {
		case r == '[':
			t.state = stCSI
		case r == ']' || r == 'P' || r == 'X' || r == '^' || r == '_':
			t.state = stString
		case r >= 0x20 && r <= 0x2f:
			t.state = stEscInter
		default:
			t.state = stText
		}
	case stEscInter:
		if r < 0x20 || r > 0x2f {
			t.state = stText
		}
	case stCSI:
		if r >= 0x40 && r <= 0x7e {
			t.state = stText
		} else if r == 0x1b {
			t.state = stEsc
		}
	case stString:
		switch r {
		case 0x07, 0x9c:
			t.state = stText
		case 0x1b:
			t.state = stStringEsc
		}
	case stStringEsc:
		if r == '\\' {
			t.state = stText
		} else {
			t.state = stString
		}
	}
}

func (t *Terminal) text(r rune) {
	switch {
	case r == 0x1b:
		t.state = stEsc
	case r == 0x9b:
		t.state = stCSI
	case r == 0x9d || r == 0x90:
		t.state = stString
	case r == '\n':
		t.ensureRow(t.row)
		t.row++
		t.col = 0
	case r == '\r':
		t.col = 0
	case r == '\b':
		if t.col > 0 {
			t.col--
		}
	case r == '\t':
		next := (t.col/8 + 1) * 8
		for t.col < next {
			t.put(' ')
		}
	case r < 0x20 || (r >= 0x7f && r < 0xa0):
		// other control characters are dropped
	default:
		t.put(r)
	}
}

func (t *Terminal) ensureRow(row int) {
	for len(t.Content) <= row {
		t.Content = append(t.Content, nil)
	}
}

func (t *Terminal) put(r rune) {
	if !t.AutoResizeX && t.width > 0 && t.col >= t.width {
		t.ensureRow(t.row)
		t.row++
		t.col = 0
	}
	t.ensureRow(t.row)
	line := t.Content[t.row]
	for len(line) < t.col {
		line = append(line, ' ')
	}
	if t.col < len(line) {
		line[t.col] = r
	} else {
		line = append(line, r)
	}
	t.Content[t.row] = line
	t.col++
}
