package tuist

import (
	"strings"
	"time"
	"unicode/utf8"

	uv "github.com/charmbracelet/ultraviolet"
)

// ── Spinner ────────────────────────────────────────────────────────────

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

const spinnerStep = 100 * time.Millisecond

// Spinner shows a frame chosen from the time elapsed since Epoch (or since
// it was first mounted). It does not animate by itself here.
type Spinner struct {
	Compo

	Style func(string) string
	Label string
	Epoch time.Time

	mountedAt time.Time
}

// NewSpinner returns a Spinner.
func NewSpinner() *Spinner { return &Spinner{} }

// OnMount records the mount time.
func (s *Spinner) OnMount(ctx Context) { s.mountedAt = time.Now() }

// Render emits the current frame and the label.
func (s *Spinner) Render(ctx Context) {
	start := s.Epoch
	if start.IsZero() {
		start = s.mountedAt
	}
	idx := 0
	if !start.IsZero() {
		idx = int(time.Since(start)/spinnerStep) % len(spinnerFrames)
	}
	frame := spinnerFrames[idx]
	if s.Style != nil {
		frame = s.Style(frame)
	}
	if s.Label != "" {
		frame += " " + s.Label
	}
	ctx.Line(frame)
}

// ── TextInput ──────────────────────────────────────────────────────────

// TextInput is a minimal single-buffer line editor.
type TextInput struct {
	Compo

	Prompt             string
	ContinuationPrompt string

	OnSubmit        func(ctx Context, value string) bool
	Suggestion      string
	SuggestionStyle func(string) string
	OnChange        func(ctx Context)
	KeyInterceptor  func(ctx Context, ev uv.KeyPressEvent) bool

	value   []rune
	cursor  int
	focused bool
}

// NewTextInput returns a TextInput with the given prompt.
func NewTextInput(prompt string) *TextInput { return &TextInput{Prompt: prompt} }

// SetFocused records focus.
func (t *TextInput) SetFocused(_ Context, focused bool) { t.focused = focused }

// Value returns the text.
func (t *TextInput) Value() string { return string(t.value) }

// SetValue replaces the text and moves the cursor to the end.
func (t *TextInput) SetValue(s string) {
	t.value = []rune(s)
	t.cursor = len(t.value)
	t.Update()
}

// CursorEnd moves the cursor to the end.
func (t *TextInput) CursorEnd() { t.cursor = len(t.value) }

// CursorScreenCol is the cursor's column on its line, prompt included.
func (t *TextInput) CursorScreenCol() int {
	return utf8.RuneCountInString(t.Prompt) + t.cursor
}

// InsertRune inserts r at the cursor.
func (t *TextInput) InsertRune(r rune) { t.insert([]rune{r}) }

func (t *TextInput) insert(rs []rune) {
	v := make([]rune, 0, len(t.value)+len(rs))
	v = append(v, t.value[:t.cursor]...)
	v = append(v, rs...)
	v = append(v, t.value[t.cursor:]...)
	t.value = v
	t.cursor += len(rs)
	t.Suggestion = ""
	t.Update()
}

// Render emits the prompt and the text, one output line per text line.
func (t *TextInput) Render(ctx Context) {
	lines := strings.Split(string(t.value), "\n")
	for i, l := range lines {
		p := t.Prompt
		if i > 0 {
			p = t.ContinuationPrompt
		}
		if i == len(lines)-1 && t.Suggestion != "" {
			sug := t.Suggestion
			if t.SuggestionStyle != nil {
				sug = t.SuggestionStyle(sug)
			}
			l += sug
		}
		ctx.Line(p + l)
	}
	if t.focused {
		ctx.SetCursor(len(lines)-1, t.CursorScreenCol())
	}
}

// HandleKeyPress supports typing, Backspace, Left/Right and Enter.
func (t *TextInput) HandleKeyPress(ctx Context, ev uv.KeyPressEvent) bool {
	if t.KeyInterceptor != nil && t.KeyInterceptor(ctx, ev) {
		return true
	}
	changed := false
	switch ev.Code {
	case uv.KeyEnter:
		if t.OnSubmit != nil && t.OnSubmit(ctx, strings.TrimSpace(t.Value())) {
			t.value, t.cursor = nil, 0
			t.Update()
		}
		return true
	case uv.KeyBackspace:
		if t.cursor > 0 {
			t.value = append(t.value[:t.cursor-1:t.cursor-1], t.value[t.cursor:]...)
			t.cursor--
			changed = true
		}
	case uv.KeyLeft:
		if t.cursor > 0 {
			t.cursor--
		}
	case uv.KeyRight:
		if t.cursor < len(t.value) {
			t.cursor++
		}
	default:
		if ev.Text == "" {
			return false
		}
		t.insert([]rune(ev.Text))
		changed = true
	}
	if changed && t.OnChange != nil {
		t.OnChange(ctx)
	}
	t.Update()
	return true
}

// HandlePaste inserts pasted content.
func (t *TextInput) HandlePaste(ctx Context, ev uv.PasteEvent) bool {
	t.insert([]rune(ev.Content))
	if t.OnChange != nil {
		t.OnChange(ctx)
	}
	return true
}

// ── Completion ─────────────────────────────────────────────────────────

// Completion is one completion candidate.
type Completion struct {
	Label         string
	DisplayLabel  string
	Detail        string
	Documentation string
	Kind          string
	InsertText    string
}

// CompletionResult is what a CompletionProvider returns.
type CompletionResult struct {
	Items       []Completion
	ReplaceFrom int
}

// CompletionProvider computes completions for input at cursorPos (bytes).
type CompletionProvider func(input string, cursorPos int) CompletionResult

// DetailRenderer renders a completion's detail panel.
type DetailRenderer func(c Completion, width int) []string

// CompletionMenu would show completions for a TextInput. Without a live
// display it never opens; Tab inserts the longest common prefix instead.
type CompletionMenu struct {
	input    *TextInput
	provider CompletionProvider

	DetailRenderer DetailRenderer
}

// NewCompletionMenu returns a menu for input.
func NewCompletionMenu(input *TextInput, provider CompletionProvider) *CompletionMenu {
	return &CompletionMenu{input: input, provider: provider}
}

// Refresh is a no-op.
func (m *CompletionMenu) Refresh(ctx Context) {}

// Visible is always false.
func (m *CompletionMenu) Visible() bool { return false }

// Hide is a no-op.
func (m *CompletionMenu) Hide() {}

// HandleKeyPress completes on Tab with the candidates' common prefix.
func (m *CompletionMenu) HandleKeyPress(ctx Context, ev uv.KeyPressEvent) bool {
	if ev.Code != uv.KeyTab || ev.Mod != 0 || m.input == nil || m.provider == nil {
		return false
	}
	in := m.input
	text := in.Value()
	pos := len(string(in.value[:in.cursor]))
	res := m.provider(text, pos)
	if len(res.Items) == 0 || res.ReplaceFrom < 0 || res.ReplaceFrom > pos {
		return true
	}
	common := insertTextOf(res.Items[0])
	for _, c := range res.Items[1:] {
		s := insertTextOf(c)
		n := 0
		for n < len(common) && n < len(s) && common[n] == s[n] {
			n++
		}
		common = common[:n]
	}
	in.SetValue(text[:res.ReplaceFrom] + common + text[pos:])
	in.cursor = utf8.RuneCountInString(text[:res.ReplaceFrom] + common)
	return true
}

func insertTextOf(c Completion) string {
	if c.InsertText != "" {
		return c.InsertText
	}
	return c.Label
}
