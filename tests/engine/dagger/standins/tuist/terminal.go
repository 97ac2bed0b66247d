package tuist

import (
	"io"
	"os"

	"golang.org/x/term"
)

// Terminal is the I/O surface a TUI writes to.
type Terminal interface {
	Start(onInput func([]byte), onResize func()) error
	Stop()
	SetInputPassthrough(w io.Writer)
	Write(p []byte)
	WriteString(s string)
	Columns() int
	Rows() int
	HideCursor()
	ShowCursor()
}

// NewStdTerminal returns a Terminal on stdin/stdout. It never switches the
// terminal to raw mode.
func NewStdTerminal() Terminal { return &stdTerminal{out: os.Stdout} }

type stdTerminal struct{ out *os.File }

func (s *stdTerminal) Start(onInput func([]byte), onResize func()) error { return nil }
func (s *stdTerminal) Stop()                                             {}
func (s *stdTerminal) SetInputPassthrough(w io.Writer)                   {}
func (s *stdTerminal) Write(p []byte)                                    { _, _ = s.out.Write(p) }
func (s *stdTerminal) WriteString(str string)                            { _, _ = io.WriteString(s.out, str) }
func (s *stdTerminal) HideCursor()                                       {}
func (s *stdTerminal) ShowCursor()                                       {}

func (s *stdTerminal) size() (int, int) {
	for _, f := range []*os.File{s.out, os.Stderr, os.Stdin} {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			return w, h
		}
	}
	return 0, 0
}

func (s *stdTerminal) Columns() int { w, _ := s.size(); return w }
func (s *stdTerminal) Rows() int    { _, h := s.size(); return h }
