// Package dang is a stand-in for github.com/vito/dang/v2/pkg/dang, which the
// Go module proxy does not serve. It declares the names dagger's Dang SDK
// glue (core/sdk/dang/v2) compiles against; every entry point that would
// load or evaluate Dang code returns ErrUnavailable.
package dang

import (
	"context"
	"errors"
	"iter"

	"github.com/Khan/genqlient/graphql"
	"github.com/vito/dang/v2/pkg/hm"
	"github.com/vito/dang/v2/pkg/introspection"
	"github.com/vito/dang/v2/pkg/querybuilder"
)

// ErrUnavailable is returned by everything that would run Dang code.
var ErrUnavailable = errors.New("the Dang SDK is not available in this build")

// ── entry points ───────────────────────────────────────────────────────

// RunDir would evaluate the Dang module in dirPath.
func RunDir(ctx context.Context, dirPath string, isDebug bool) (ValueScope, error) {
	return nil, ErrUnavailable
}

// DeclareDir would declare (not run) the Dang module in dirPath.
func DeclareDir(ctx context.Context, dirPath string, isDebug bool) (ValueScope, error) {
	return nil, ErrUnavailable
}

// EvalNode would evaluate node in scope.
func EvalNode(ctx context.Context, scope ValueScope, node Node) (Value, error) {
	return nil, ErrUnavailable
}

// EvaluateFormsWithPhases would evaluate a class body.
func EvaluateFormsWithPhases(ctx context.Context, forms []Node, scope ValueScope) (Value, error) {
	return nil, ErrUnavailable
}

// ImportConfig describes a GraphQL schema made importable by name.
type ImportConfig struct {
	Name       string
	Client     graphql.Client
	Schema     *introspection.Schema
	AutoImport bool
	Dagger     bool
}

type importConfigsKey struct{}

// ContextWithImportConfigs records import configs in ctx.
func ContextWithImportConfigs(ctx context.Context, configs ...ImportConfig) context.Context {
	return context.WithValue(ctx, importConfigsKey{}, configs)
}

// ── scopes and bindings ────────────────────────────────────────────────

// Visibility of a binding.
type Visibility int

// Visibilities.
const (
	PrivateVisibility Visibility = iota
	PublicVisibility
)

// Kind of a named type.
type Kind int

// Kinds.
const (
	ObjectKind Kind = iota
	EnumKind
	ScalarKind
	InterfaceKind
	UnionKind
	InputKind
)

// BindingOriginKind says where a binding came from.
type BindingOriginKind int

// Binding origins.
const (
	BindingOriginUnknown BindingOriginKind = iota
	BindingOriginLocal
	BindingOriginImport
)

// BindingOrigin describes where a binding came from.
type BindingOrigin struct {
	Kind        BindingOriginKind
	ImportNames []string
	Qualified   bool
}

// Keyed pairs a name with a value.
type Keyed[X any] struct {
	Key        string
	Value      X
	Positional bool
}

// Value is a runtime value.
type Value interface {
	Type() hm.Type
	String() string
}

// ValueScope is a scope of value bindings.
type ValueScope interface {
	Value
	Lookup(ctx context.Context, name string) (Value, bool, error)
	Bindings(Visibility) []Keyed[Value]
	Bind(name string, value Value, visibility Visibility)
	EnterSelf(value Value)
}

// TypeScope is a named type together with its members.
type TypeScope interface {
	hm.Type
	SchemeOf(name string) (*hm.Scheme, bool)
	LocalSchemeOf(name string) (*hm.Scheme, bool)
	NamedTypes() iter.Seq2[string, TypeScope]
	Bindings(visibility Visibility) iter.Seq2[string, *hm.Scheme]
	GetDirectives(name string) []*DirectiveApplication
	GetDocString(name string) (string, bool)
	GetTypeDocString() string
	LocalTypeOrigin(name string) (BindingOrigin, bool)
	LocalValueOrigin(name string) (BindingOrigin, bool)
}

// Object is a value scope backed by a type (a module, class instance,
// enum, ...).
type Object struct {
	Mod          TypeScope
	Values       map[string]Value
	Visibilities map[string]Visibility
	Parent       *Object
	self         Value
}

// NewObject returns an empty Object of type mod.
func NewObject(mod TypeScope) *Object {
	return &Object{Mod: mod, Values: map[string]Value{}, Visibilities: map[string]Visibility{}}
}

func (o *Object) Type() hm.Type {
	if o.Mod == nil {
		return nil
	}
	return o.Mod
}

func (o *Object) String() string { return "<object>" }

// Lookup finds name in o or its parents.
func (o *Object) Lookup(ctx context.Context, name string) (Value, bool, error) {
	for s := o; s != nil; s = s.Parent {
		if v, ok := s.Values[name]; ok {
			return v, true, nil
		}
	}
	return nil, false, nil
}

// Bindings lists o's own bindings with at least visibility vis.
func (o *Object) Bindings(vis Visibility) []Keyed[Value] {
	var out []Keyed[Value]
	for k, v := range o.Values {
		if o.Visibilities[k] >= vis {
			out = append(out, Keyed[Value]{Key: k, Value: v})
		}
	}
	return out
}

// Bind sets name in o.
func (o *Object) Bind(name string, value Value, vis Visibility) {
	o.Values[name] = value
	o.Visibilities[name] = vis
}

// EnterSelf sets the value of self.
func (o *Object) EnterSelf(value Value) { o.self = value }

// OverlayValueScope looks names up in Primary, then in Lexical.
type OverlayValueScope struct {
	Primary ValueScope
	Lexical ValueScope
}

// CreateOverlayValueScope layers primary over lexical.
func CreateOverlayValueScope(primary ValueScope, lexical ValueScope) OverlayValueScope {
	return OverlayValueScope{Primary: primary, Lexical: lexical}
}

func (c OverlayValueScope) Type() hm.Type     { return c.Primary.Type() }
func (c OverlayValueScope) String() string    { return c.Primary.String() }
func (c OverlayValueScope) EnterSelf(v Value) { c.Primary.EnterSelf(v) }

func (c OverlayValueScope) Lookup(ctx context.Context, name string) (Value, bool, error) {
	if v, ok, err := c.Primary.Lookup(ctx, name); ok || err != nil {
		return v, ok, err
	}
	if c.Lexical == nil {
		return nil, false, nil
	}
	return c.Lexical.Lookup(ctx, name)
}

func (c OverlayValueScope) Bindings(vis Visibility) []Keyed[Value] { return c.Primary.Bindings(vis) }

func (c OverlayValueScope) Bind(name string, value Value, vis Visibility) {
	c.Primary.Bind(name, value, vis)
}

// ── types ──────────────────────────────────────────────────────────────

// Type is a named type (object, enum, scalar, interface, ...).
type Type struct {
	Named   string
	Kind    Kind
	schemes map[string]*hm.Scheme
}

// NewType returns a named type of the given kind.
func NewType(name string, kind Kind) *Type { return &Type{Named: name, Kind: kind} }

// StringType is the built-in String scalar.
var StringType = NewType("String", ScalarKind)

func (t *Type) Name() string   { return t.Named }
func (t *Type) String() string { return t.Named }

func (t *Type) SchemeOf(name string) (*hm.Scheme, bool) {
	s, ok := t.schemes[name]
	return s, ok
}

// LocalSchemeOf is SchemeOf restricted to t's own members.
func (t *Type) LocalSchemeOf(name string) (*hm.Scheme, bool) { return t.SchemeOf(name) }

func (t *Type) NamedTypes() iter.Seq2[string, TypeScope] {
	return func(func(string, TypeScope) bool) {}
}

func (t *Type) Bindings(vis Visibility) iter.Seq2[string, *hm.Scheme] {
	return func(func(string, *hm.Scheme) bool) {}
}

func (t *Type) GetDirectives(name string) []*DirectiveApplication  { return nil }
func (t *Type) GetDocString(name string) (string, bool)            { return "", false }
func (t *Type) GetTypeDocString() string                           { return "" }
func (t *Type) LocalTypeOrigin(name string) (BindingOrigin, bool)  { return BindingOrigin{}, false }
func (t *Type) LocalValueOrigin(name string) (BindingOrigin, bool) { return BindingOrigin{}, false }

// RecordType is the argument record of a function.
type RecordType struct {
	Named      string
	Fields     []Keyed[*hm.Scheme]
	Directives []Keyed[[]*DirectiveApplication]
	DocStrings map[string]string
}

func (r *RecordType) Name() string   { return r.Named }
func (r *RecordType) String() string { return "record" }

// ListType is a list of the embedded element type.
type ListType struct {
	hm.Type
}

// MapType is a string-keyed map of the embedded value type.
type MapType struct {
	hm.Type
}

// ── values ─────────────────────────────────────────────────────────────

// StringValue is a string.
type StringValue struct{ Val string }

// IntValue is an integer.
type IntValue struct{ Val int }

// BoolValue is a boolean.
type BoolValue struct{ Val bool }

// NullValue is null.
type NullValue struct{}

// EnumValue is an enum member.
type EnumValue struct {
	Val      string
	EnumType hm.Type
}

// ScalarValue is a custom scalar.
type ScalarValue struct {
	Val        string
	ScalarType hm.Type
}

// ListValue is a list.
type ListValue struct {
	Elements []Value
	ElemType hm.Type
}

// MapValue is a string-keyed map.
type MapValue struct {
	Keys    []string
	Entries map[string]Value
	ValType hm.Type
}

// GraphQLFunction is a GraphQL field callable from Dang.
type GraphQLFunction struct {
	Name       string
	TypeName   string
	Field      *introspection.Field
	FnType     *hm.FunctionType
	Client     graphql.Client
	Schema     *introspection.Schema
	TypeScope  TypeScope
	QueryChain *querybuilder.Selection
	IsMutation bool
}

// GraphQLValue is a lazily fetched GraphQL value.
type GraphQLValue struct {
	Name       string
	TypeName   string
	Field      *introspection.Field
	ValType    hm.Type
	Client     graphql.Client
	Schema     *introspection.Schema
	TypeScope  TypeScope
	QueryChain *querybuilder.Selection
	IsMutation bool
}

// ConstructorFunction constructs instances of a Dang class.
type ConstructorFunction struct {
	Closure         ValueScope
	ObjectName      string
	Parameters      []*FieldDecl
	BlockParamName  string
	ObjectType      *Type
	FnType          *hm.FunctionType
	ObjectBodyForms []Node
}

// Call would construct an instance.
func (c *ConstructorFunction) Call(ctx context.Context, env ValueScope, args map[string]Value) (Value, error) {
	return nil, ErrUnavailable
}

func (v StringValue) Type() hm.Type           { return StringType }
func (v StringValue) String() string          { return v.Val }
func (v IntValue) Type() hm.Type              { return NewType("Int", ScalarKind) }
func (v IntValue) String() string             { return "int" }
func (v BoolValue) Type() hm.Type             { return NewType("Boolean", ScalarKind) }
func (v BoolValue) String() string            { return "bool" }
func (v NullValue) Type() hm.Type             { return nil }
func (v NullValue) String() string            { return "null" }
func (v EnumValue) Type() hm.Type             { return v.EnumType }
func (v EnumValue) String() string            { return v.Val }
func (v ScalarValue) Type() hm.Type           { return v.ScalarType }
func (v ScalarValue) String() string          { return v.Val }
func (v ListValue) Type() hm.Type             { return ListType{v.ElemType} }
func (v ListValue) String() string            { return "list" }
func (v MapValue) Type() hm.Type              { return MapType{v.ValType} }
func (v MapValue) String() string             { return "map" }
func (v GraphQLFunction) Type() hm.Type       { return v.FnType }
func (v GraphQLFunction) String() string      { return v.Name }
func (v GraphQLValue) Type() hm.Type          { return v.ValType }
func (v GraphQLValue) String() string         { return v.Name }
func (c *ConstructorFunction) Type() hm.Type  { return c.FnType }
func (c *ConstructorFunction) String() string { return c.ObjectName }

// ── syntax nodes ───────────────────────────────────────────────────────

// Node is a syntax tree node.
type Node interface {
	Eval(ctx context.Context, env ValueScope) (Value, error)
}

// Record is a list of named argument nodes.
type Record []Keyed[Node]

// ValueNode wraps an already-evaluated value.
type ValueNode struct{ Val Value }

// Symbol is a name reference.
type Symbol struct{ Name string }

// Select is field selection on a receiver.
type Select struct {
	Receiver Node
	Field    *Symbol
}

// FunCall is a function call.
type FunCall struct {
	Fun  Node
	Args Record
}

// DirectiveApplication is a directive applied to a declaration.
type DirectiveApplication struct {
	Name string
	Args []Keyed[Node]
}

// FieldDecl is a field (or method) declaration in a class body.
type FieldDecl struct {
	Name       *Symbol
	Value      Node
	Visibility Visibility
	Directives []*DirectiveApplication
	DocString  string
}

func (n *ValueNode) Eval(ctx context.Context, env ValueScope) (Value, error) { return n.Val, nil }
func (n *Symbol) Eval(ctx context.Context, env ValueScope) (Value, error)    { return nil, ErrUnavailable }
func (n *Select) Eval(ctx context.Context, env ValueScope) (Value, error)    { return nil, ErrUnavailable }
func (n *FunCall) Eval(ctx context.Context, env ValueScope) (Value, error) {
	return nil, ErrUnavailable
}
func (n *FieldDecl) Eval(ctx context.Context, env ValueScope) (Value, error) {
	return nil, ErrUnavailable
}
