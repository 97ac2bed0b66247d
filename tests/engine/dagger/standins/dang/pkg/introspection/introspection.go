// Package introspection is part of a stand-in for github.com/vito/dang/v2:
// the subset of GraphQL introspection types dagger's Dang glue touches.
package introspection

// Response is the result of an introspection query.
type Response struct {
	Schema *Schema `json:"__schema"`
}

// Schema is an introspected GraphQL schema.
type Schema struct {
	QueryType struct {
		Name string `json:"name"`
	} `json:"queryType"`
	Types Types `json:"types"`
}

// Types is the list of schema types.
type Types []*Type

// Get returns the type named name, or nil.
func (ts Types) Get(name string) *Type {
	for _, t := range ts {
		if t != nil && t.Name == name {
			return t
		}
	}
	return nil
}

// TypeKind is a GraphQL type kind.
type TypeKind string

// Type kinds.
const (
	TypeKindScalar      TypeKind = "SCALAR"
	TypeKindObject      TypeKind = "OBJECT"
	TypeKindInterface   TypeKind = "INTERFACE"
	TypeKindUnion       TypeKind = "UNION"
	TypeKindEnum        TypeKind = "ENUM"
	TypeKindInputObject TypeKind = "INPUT_OBJECT"
	TypeKindList        TypeKind = "LIST"
	TypeKindNonNull     TypeKind = "NON_NULL"
)

// Type is an introspected named type.
type Type struct {
	Kind        TypeKind `json:"kind"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Fields      []*Field `json:"fields"`
}

// TypeRef references a type, possibly wrapped in LIST/NON_NULL.
type TypeRef struct {
	Kind   TypeKind `json:"kind"`
	Name   string   `json:"name,omitempty"`
	OfType *TypeRef `json:"ofType,omitempty"`
}

// Field is a field of an object type.
type Field struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	TypeRef     *TypeRef `json:"type"`
}
