// Package teav1 is a stand-in for github.com/vito/tuist/teav1: it hosts a
// bubbletea v1 model as a tuist component. Because the tuist stand-in never
// reads keyboard input, a mounted model cannot be interacted with; it is
// initialised, rendered once if asked, and then quit (so callers see an
// unanswered, i.e. cancelled, form instead of waiting forever).
package teav1

import (
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	uv "github.com/charmbracelet/ultraviolet"
	"github.com/vito/tuist"
)

// Wrap adapts a tea.Model to tuist.Component.
type Wrap struct {
	tuist.Compo

	model  tea.Model
	onQuit func()
	quit   bool
}

// New wraps model.
func New(model tea.Model) *Wrap { return &Wrap{model: model} }

// OnQuit sets the callback run when the model quits.
func (w *Wrap) OnQuit(fn func()) { w.onQuit = fn }

// Model returns the current model.
func (w *Wrap) Model() tea.Model { return w.model }

// SendMsg feeds msg to the model's Update.
func (w *Wrap) SendMsg(msg tea.Msg) {
	if w.model == nil {
		return
	}
	m, _ := w.model.Update(msg)
	if m != nil {
		w.model = m
	}
	w.Update()
}

// OnMount initialises the model and, since no input can reach it, quits it.
func (w *Wrap) OnMount(ctx tuist.Context) {
	if w.model != nil {
		_ = w.model.Init() // commands are not run: no event loop here
	}
	ctx.Dispatch(w.doQuit)
}

func (w *Wrap) doQuit() {
	if w.quit {
		return
	}
	w.quit = true
	if w.onQuit != nil {
		w.onQuit()
	}
}

// Render emits the model's view.
func (w *Wrap) Render(ctx tuist.Context) {
	if w.model == nil {
		return
	}
	view := strings.TrimSuffix(w.model.View(), "\n")
	if view != "" {
		ctx.Lines(strings.Split(view, "\n")...)
	}
}

// HandleKeyPress does not translate keys in this stand-in.
func (w *Wrap) HandleKeyPress(_ tuist.Context, ev uv.KeyPressEvent) bool { return false }

// HandlePaste does not forward pastes in this stand-in.
func (w *Wrap) HandlePaste(_ tuist.Context, ev uv.PasteEvent) bool { return false }
