package tuist

import (
	"context"
	"strings"
	"time"

	uv "github.com/charmbracelet/ultraviolet"
)

// CursorPos is a cursor position relative to a component's output.
type CursorPos struct {
	Row, Col int
}

// RenderResult is what rendering a component produced.
type RenderResult struct {
	Lines  []string
	Cursor *CursorPos
}

// lineSink collects the lines written during one Render call.
type lineSink struct {
	lines  []string
	cursor *CursorPos
}

// Context is passed to Render, event handlers and lifecycle hooks.
// Width and Height are layout constraints during Render (Height 0 means
// unconstrained) and zero elsewhere.
type Context struct {
	context.Context

	Width  int
	Height int

	tui  *TUI
	sink *lineSink
}

func (ctx Context) base() context.Context {
	if ctx.Context == nil {
		return context.Background()
	}
	return ctx.Context
}

// Deadline, Done, Err and Value guard against a zero Context.
func (ctx Context) Deadline() (time.Time, bool) { return ctx.base().Deadline() }
func (ctx Context) Done() <-chan struct{}       { return ctx.base().Done() }
func (ctx Context) Err() error                  { return ctx.base().Err() }
func (ctx Context) Value(key any) any           { return ctx.base().Value(key) }

// Line appends one output line.
func (ctx Context) Line(s string) {
	if ctx.sink != nil {
		ctx.sink.lines = append(ctx.sink.lines, s)
	}
}

// Lines appends several output lines.
func (ctx Context) Lines(ss ...string) {
	if ctx.sink != nil {
		ctx.sink.lines = append(ctx.sink.lines, ss...)
	}
}

// SetCursor records where the hardware cursor would go.
func (ctx Context) SetCursor(row, col int) {
	if ctx.sink != nil {
		ctx.sink.cursor = &CursorPos{Row: row, Col: col}
	}
}

// ScreenHeight is the terminal height in rows (0 if unknown).
func (ctx Context) ScreenHeight() int {
	if ctx.tui == nil || ctx.tui.term == nil {
		return 0
	}
	return ctx.tui.term.Rows()
}

// Resize returns a copy of ctx with other layout constraints.
func (ctx Context) Resize(w, h int) Context {
	ctx.Width, ctx.Height = w, h
	return ctx
}

// SetFocus moves input focus (see TUI.SetFocus).
func (ctx Context) SetFocus(comp Component) {
	if ctx.tui != nil {
		ctx.tui.SetFocus(comp)
	}
}

// ShowOverlay registers an overlay (see TUI.ShowOverlay).
func (ctx Context) ShowOverlay(comp Component, opts *OverlayOptions) *OverlayHandle {
	if ctx.tui == nil {
		return &OverlayHandle{}
	}
	return ctx.tui.ShowOverlay(comp, opts)
}

// AddInputListener registers an input listener; it returns the remover.
func (ctx Context) AddInputListener(l InputListener) func() {
	if ctx.tui == nil {
		return func() {}
	}
	return ctx.tui.AddInputListener(l)
}

// RequestRender asks for a repaint (no-op without a live display).
func (ctx Context) RequestRender(repaint bool) {
	if ctx.tui != nil {
		ctx.tui.RequestRender(repaint)
	}
}

// HasKittyKeyboard reports kitty keyboard protocol support (never here).
func (ctx Context) HasKittyKeyboard() bool { return false }

// Dispatch runs fn on the UI goroutine.
func (ctx Context) Dispatch(fn func()) {
	if ctx.tui != nil {
		ctx.tui.Dispatch(fn)
		return
	}
	fn()
}

// Compo is embedded by every component. It tracks lifecycle state and
// the children rendered during the last Render.
type Compo struct {
	mounted  bool
	mountCtx context.Context
	cancel   context.CancelFunc
	children []Component // rendered during the current/last pass
}

func (c *Compo) compo() *Compo { return c }

// Update marks the component dirty. This stand-in renders only on demand
// and never caches, so there is nothing to invalidate.
func (c *Compo) Update() {}

// RenderChild renders child and appends its lines to ctx's output.
func (c *Compo) RenderChild(ctx Context, child Component) {
	res := c.RenderChildResult(ctx, child)
	if ctx.sink == nil {
		return
	}
	if res.Cursor != nil {
		ctx.sink.cursor = &CursorPos{Row: len(ctx.sink.lines) + res.Cursor.Row, Col: res.Cursor.Col}
	}
	ctx.sink.lines = append(ctx.sink.lines, res.Lines...)
}

// RenderChildInline renders child and joins its output into one string.
func (c *Compo) RenderChildInline(ctx Context, child Component) string {
	return strings.Join(c.RenderChildResult(ctx, child).Lines, "")
}

// RenderChildResult renders child and returns its output without
// appending it anywhere.
func (c *Compo) RenderChildResult(ctx Context, child Component) RenderResult {
	if child == nil {
		return RenderResult{}
	}
	c.children = append(c.children, child)
	return renderComponent(ctx, child)
}

// renderComponent mounts comp if needed, renders it into a fresh sink and
// dismounts children it stopped rendering.
func renderComponent(ctx Context, comp Component) RenderResult {
	cc := comp.compo()
	mount(ctx, comp)
	previous := cc.children
	cc.children = nil

	sink := &lineSink{}
	child := ctx
	child.Context = cc.mountCtx
	child.sink = sink
	comp.Render(child)

	for _, old := range previous {
		if !containsComponent(cc.children, old) {
			dismount(old)
		}
	}
	return RenderResult{Lines: sink.lines, Cursor: sink.cursor}
}

func containsComponent(list []Component, c Component) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}

func mount(ctx Context, comp Component) {
	cc := comp.compo()
	if cc.mounted {
		return
	}
	cc.mounted = true
	cc.mountCtx, cc.cancel = context.WithCancel(ctx.base())
	if m, ok := comp.(Mounter); ok {
		hookCtx := ctx
		hookCtx.Context = cc.mountCtx
		hookCtx.Width, hookCtx.Height, hookCtx.sink = 0, 0, nil
		m.OnMount(hookCtx)
	}
}

// dismount tears down comp and its descendants, leaves first.
func dismount(comp Component) {
	cc := comp.compo()
	if !cc.mounted {
		return
	}
	for _, ch := range cc.children {
		dismount(ch)
	}
	cc.children = nil
	cc.mounted = false
	if cc.cancel != nil {
		cc.cancel()
	}
	if d, ok := comp.(Dismounter); ok {
		d.OnDismount()
	}
}

// Component is implemented by everything that embeds Compo and has Render.
type Component interface {
	compo() *Compo
	Render(ctx Context)
}

// Interactive components receive key presses while focused.
type Interactive interface {
	Component
	HandleKeyPress(ctx Context, ev uv.KeyPressEvent) bool
}

// Pasteable components receive bracketed-paste content.
type Pasteable interface {
	HandlePaste(ctx Context, ev uv.PasteEvent) bool
}

// MouseEvent is a mouse event with component-relative coordinates.
type MouseEvent struct {
	uv.MouseEvent
	Row int
	Col int
}

// MouseEnabled components receive mouse events.
type MouseEnabled interface {
	Component
	HandleMouse(ctx Context, ev MouseEvent) bool
}

// Hoverable components learn when the mouse enters or leaves them.
type Hoverable interface {
	SetHovered(ctx Context, hovered bool)
}

// Focusable components learn when they gain or lose focus.
type Focusable interface {
	SetFocused(ctx Context, focused bool)
}

// Mounter components are told when they enter a rendered tree.
type Mounter interface {
	OnMount(ctx Context)
}

// Dismounter components are told when they leave a rendered tree.
type Dismounter interface {
	OnDismount()
}

// InputListener sees raw input events before components do.
type InputListener func(ctx Context, ev uv.Event) bool

// Container renders its children one after another.
type Container struct {
	Compo
	Children []Component
}

// AddChild appends a child.
func (c *Container) AddChild(comp Component) {
	c.Children = append(c.Children, comp)
	c.Update()
}

// RemoveChild removes the first occurrence of comp.
func (c *Container) RemoveChild(comp Component) {
	for i, ch := range c.Children {
		if ch == comp {
			c.Children = append(c.Children[:i:i], c.Children[i+1:]...)
			c.Update()
			return
		}
	}
}

// Clear removes every child.
func (c *Container) Clear() {
	c.Children = nil
	c.Update()
}

// Render renders the children in order.
func (c *Container) Render(ctx Context) {
	for _, ch := range c.Children {
		c.RenderChild(ctx, ch)
	}
}

// Slot holds at most one child.
type Slot struct {
	Compo
	child Component
}

// NewSlot returns a Slot holding child (which may be nil).
func NewSlot(child Component) *Slot { return &Slot{child: child} }

// Set replaces the child.
func (s *Slot) Set(c Component) { s.child = c; s.Update() }

// Get returns the child.
func (s *Slot) Get() Component { return s.child }

// Render renders the child, if any.
func (s *Slot) Render(ctx Context) {
	if s.child != nil {
		s.RenderChild(ctx, s.child)
	}
}
