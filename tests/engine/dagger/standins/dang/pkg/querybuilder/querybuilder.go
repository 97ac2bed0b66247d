// Package querybuilder is part of a stand-in for github.com/vito/dang/v2:
// a tiny chainable record of a GraphQL selection path.
package querybuilder

// Selection is one step of a query chain.
type Selection struct {
	prev     *Selection
	field    string
	fragment string
	args     map[string]any
}

// Query starts a chain at the root.
func Query() *Selection { return &Selection{} }

// Select appends a field selection.
func (s *Selection) Select(field string) *Selection {
	return &Selection{prev: s, field: field}
}

// Arg sets an argument on the current field.
func (s *Selection) Arg(name string, value any) *Selection {
	n := *s
	n.args = make(map[string]any, len(s.args)+1)
	for k, v := range s.args {
		n.args[k] = v
	}
	n.args[name] = value
	return &n
}

// InlineFragment appends an inline fragment on typeName.
func (s *Selection) InlineFragment(typeName string) *Selection {
	return &Selection{prev: s, fragment: typeName}
}
