package tuist

// OverlayAnchor says where an overlay sits relative to the viewport.
type OverlayAnchor int

// Overlay anchors.
const (
	AnchorCenter OverlayAnchor = iota
	AnchorTopLeft
	AnchorTopRight
	AnchorBottomLeft
	AnchorBottomRight
	AnchorTopCenter
	AnchorBottomCenter
	AnchorLeftCenter
	AnchorRightCenter
)

// OverlayMargin is spacing from the terminal edges, in cells.
type OverlayMargin struct {
	Top, Right, Bottom, Left int
}

// SizeValue is an absolute cell count or a percentage.
type SizeValue struct {
	n     float64
	isPct bool
	set   bool
}

// SizeAbs is an absolute size.
func SizeAbs(n int) SizeValue { return SizeValue{n: float64(n), set: true} }

// SizePct is a percentage (0-100) of the terminal dimension.
func SizePct(p float64) SizeValue { return SizeValue{n: p, isPct: true, set: true} }

// CursorGroup links cursor-relative overlays.
type CursorGroup struct{ _ byte }

// NewCursorGroup returns a new group (identity matters).
func NewCursorGroup() *CursorGroup { return &CursorGroup{} }

// OverlayOptions configure an overlay's placement.
type OverlayOptions struct {
	Width     SizeValue
	MinWidth  int
	MaxHeight SizeValue

	Anchor  OverlayAnchor
	OffsetX int
	OffsetY int

	Row SizeValue
	Col SizeValue

	Margin OverlayMargin

	ContentRelative bool
	CursorRelative  bool
	PreferAbove     bool
	CursorGroup     *CursorGroup
}

// OverlayHandle controls a shown overlay.
type OverlayHandle struct {
	tui    *TUI
	comp   Component
	opts   OverlayOptions
	hidden bool
}

// Remove takes the overlay away.
func (h *OverlayHandle) Remove() {
	if h == nil || h.tui == nil {
		return
	}
	list := h.tui.overlays
	for i, o := range list {
		if o == h {
			h.tui.overlays = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if h.comp != nil {
		dismount(h.comp)
	}
	h.tui = nil
}

// SetHidden hides or shows the overlay.
func (h *OverlayHandle) SetHidden(hidden bool) {
	if h != nil {
		h.hidden = hidden
	}
}

// IsHidden reports whether the overlay is hidden.
func (h *OverlayHandle) IsHidden() bool { return h != nil && h.hidden }

// SetOptions replaces the overlay's options.
func (h *OverlayHandle) SetOptions(opts *OverlayOptions) {
	if h != nil && opts != nil {
		h.opts = *opts
	}
}
