package tuist

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	uv "github.com/charmbracelet/ultraviolet"
)

// TUI is the root of a component tree. In this stand-in it never takes
// over the terminal: Start only mounts the tree (so OnMount hooks run)
// and prints a one-line notice; RenderLines renders the tree to lines.
type TUI struct {
	Container

	term Terminal

	mu        sync.Mutex
	cond      *sync.Cond
	queue     []func()
	running   bool // dispatch loop goroutine alive
	stopped   bool
	focused   Component
	overlays  []*OverlayHandle
	listeners map[int]InputListener
	nextID    int
	debug     io.Writer

	rootCtx    context.Context
	rootCancel context.CancelFunc
}

// New returns a TUI that will write to term.
func New(term Terminal) *TUI {
	t := &TUI{term: term, listeners: map[int]InputListener{}}
	t.cond = sync.NewCond(&t.mu)
	t.rootCtx, t.rootCancel = context.WithCancel(context.Background())
	return t
}

func (t *TUI) context() Context {
	width := 80
	if t.term != nil {
		if w := t.term.Columns(); w > 0 {
			width = w
		}
	}
	return Context{Context: t.rootCtx, Width: width, tui: t}
}

// Start mounts the component tree without drawing a live display.
func (t *TUI) Start() error {
	fmt.Fprintln(os.Stderr, "note: live terminal UI not available in this build (tuist stand-in); showing output when finished. Use --progress=plain for live logs.")
	t.Dispatch(func() { renderComponent(t.context(), t) })
	return nil
}

// Stop dismounts the tree and stops the dispatch loop.
func (t *TUI) Stop() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	t.stopped = true
	t.cond.Broadcast()
	t.mu.Unlock()
	t.rootCancel()
}

// Dispatch queues fn to run on the UI goroutine, in order. After Stop,
// fn runs synchronously on the caller's goroutine.
func (t *TUI) Dispatch(fn func()) {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		fn()
		return
	}
	t.queue = append(t.queue, fn)
	if !t.running {
		t.running = true
		go t.loop()
	}
	t.cond.Signal()
	t.mu.Unlock()
}

func (t *TUI) loop() {
	for {
		t.mu.Lock()
		for len(t.queue) == 0 && !t.stopped {
			t.cond.Wait()
		}
		if len(t.queue) == 0 {
			t.running = false
			t.mu.Unlock()
			return
		}
		fn := t.queue[0]
		t.queue = t.queue[1:]
		t.mu.Unlock()
		fn()
	}
}

// SetFocus moves focus to comp, notifying Focusable components.
func (t *TUI) SetFocus(comp Component) {
	if t.focused == comp {
		return
	}
	ctx := t.context()
	ctx.Width = 0
	if f, ok := t.focused.(Focusable); ok {
		f.SetFocused(ctx, false)
	}
	t.focused = comp
	if f, ok := comp.(Focusable); ok {
		f.SetFocused(ctx, true)
	}
}

// ShowOverlay records an overlay. Overlays are never composited here.
func (t *TUI) ShowOverlay(comp Component, opts *OverlayOptions) *OverlayHandle {
	h := &OverlayHandle{tui: t, comp: comp}
	if opts != nil {
		h.opts = *opts
	}
	t.overlays = append(t.overlays, h)
	return h
}

// AddInputListener registers l; input is never read in this stand-in.
func (t *TUI) AddInputListener(l InputListener) func() {
	t.mu.Lock()
	id := t.nextID
	t.nextID++
	t.listeners[id] = l
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.listeners, id)
		t.mu.Unlock()
	}
}

// RequestRender is a no-op: nothing is painted live.
func (t *TUI) RequestRender(repaint bool) {}

// RenderOnce renders the tree and discards the output.
func (t *TUI) RenderOnce() { _ = t.RenderLines() }

// RenderLines renders the whole tree and returns its lines.
func (t *TUI) RenderLines() []string {
	return renderComponent(t.context(), t).Lines
}

// Exec runs fn with the process's standard streams.
func (t *TUI) Exec(fn func(in io.Reader, out io.Writer, errOut io.Writer) error) error {
	return fn(os.Stdin, os.Stdout, os.Stderr)
}

// PrintAbove writes text straight to the terminal.
func (t *TUI) PrintAbove(text string) {
	if t.term != nil {
		t.term.WriteString(text)
	}
}

// AboveWriter returns a writer for PrintAbove.
func (t *TUI) AboveWriter() io.Writer { return aboveWriter{t} }

type aboveWriter struct{ t *TUI }

func (w aboveWriter) Write(p []byte) (int, error) {
	w.t.PrintAbove(string(p))
	return len(p), nil
}

// SetDebugWriter sets where debug output would go.
func (t *TUI) SetDebugWriter(w io.Writer) { t.debug = w }

// SetShowHardwareCursor is accepted and ignored.
func (t *TUI) SetShowHardwareCursor(enabled bool) {}

// SetSyncOutput is accepted and ignored.
func (t *TUI) SetSyncOutput(supported bool) {}

// HasSyncOutput reports false.
func (t *TUI) HasSyncOutput() bool { return false }

// HasKittyKeyboard reports false.
func (t *TUI) HasKittyKeyboard() bool { return false }

// FullRedraws reports 0: nothing is drawn.
func (t *TUI) FullRedraws() int { return 0 }

// dispatchKey would deliver a key to the focused component; kept for
// completeness (no input reader exists in this stand-in).
func (t *TUI) dispatchKey(ev uv.KeyPressEvent) bool {
	if i, ok := t.focused.(Interactive); ok {
		return i.HandleKeyPress(t.context(), ev)
	}
	return false
}
