// Package hm is part of a stand-in for github.com/vito/dang/v2 (not served
// by the Go module proxy). It declares only the type-system shapes that
// dagger's Dang SDK glue refers to.
package hm

// Type is a type in the (absent) Dang type system.
type Type interface {
	Name() string
	String() string
}

// Scheme is a possibly polymorphic type.
type Scheme struct {
	t    Type
	poly bool
}

// NewScheme returns a monomorphic scheme for t.
func NewScheme(t Type) *Scheme { return &Scheme{t: t} }

// Type returns the scheme's type and whether it is monomorphic.
func (s *Scheme) Type() (Type, bool) {
	if s == nil {
		return nil, false
	}
	return s.t, !s.poly
}

// FunctionType is a function from an argument type to a result type.
type FunctionType struct {
	arg, ret Type
}

// NewFnType returns a function type.
func NewFnType(arg, ret Type) *FunctionType { return &FunctionType{arg: arg, ret: ret} }

// Arg is the argument type.
func (f *FunctionType) Arg() Type { return f.arg }

// Ret is the result type.
func (f *FunctionType) Ret(recursive bool) Type { return f.ret }

func (f *FunctionType) Name() string   { return "function" }
func (f *FunctionType) String() string { return "function" }

// NonNullType marks a type as non-null.
type NonNullType struct {
	Type Type
}

func (t NonNullType) Name() string {
	if t.Type == nil {
		return "!"
	}
	return t.Type.Name() + "!"
}

func (t NonNullType) String() string { return t.Name() }
