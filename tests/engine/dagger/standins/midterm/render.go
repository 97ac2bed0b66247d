package midterm

import (
	"io"
	"strings"

	"github.com/muesli/termenv"
)

// Format is an SGR attribute set; only Reset is provided.
type Format struct {
	params string
}

// Reset is the format that clears all attributes.
var Reset = Format{params: "0"}

// Render returns the escape sequence that selects the format.
func (f Format) Render() string {
	return termenv.CSI + f.params + "m"
}

// RenderLine writes one row's text (with search matches highlighted).
func (t *Terminal) RenderLine(w io.Writer, row int) error {
	return t.RenderLineFgBg(w, row, nil, nil)
}

// RenderLineFgBg writes one row's text in the given colours (nil: the
// terminal's default). Search matches are shown in reverse video, the
// current match also in bold. Rows out of range write nothing.
func (t *Terminal) RenderLineFgBg(w io.Writer, row int, fg, bg termenv.Color) error {
	if row < 0 || row >= len(t.Content) {
		return nil
	}
	line := t.Content[row]
	var base []string
	if fg != nil {
		if s := fg.Sequence(false); s != "" {
			base = append(base, s)
		}
	}
	if bg != nil {
		if s := bg.Sequence(true); s != "" {
			base = append(base, s)
		}
	}
	sgr := func(extra ...string) string {
		return termenv.CSI + strings.Join(append(append([]string{"0"}, base...), extra...), ";") + "m"
	}
	var b strings.Builder
	styled := len(base) > 0
	if styled {
		b.WriteString(sgr())
	}
	col := 0
	for i, m := range t.SearchMatches {
		if m.Row != row || m.Col < col || m.End > len(line) {
			continue
		}
		b.WriteString(string(line[col:m.Col]))
		if i == t.searchCurrent {
			b.WriteString(sgr("1", "7"))
		} else {
			b.WriteString(sgr("7"))
		}
		b.WriteString(string(line[m.Col:m.End]))
		b.WriteString(sgr())
		styled = true
		col = m.End
	}
	b.WriteString(string(line[col:]))
	if styled {
		b.WriteString(Reset.Render())
	}
	_, err := io.WriteString(w, b.String())
	return err
}
