package codex

import (
	"math"
	"strconv"
)

// Kind is the JSON type of a Value.
type Kind uint8

// The JSON kinds.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

// Value is one node of an ordered JSON tree. Objects keep their members in
// source order and numbers keep their literal text, so a tree parsed from
// editor output writes back byte for byte.
type Value struct {
	kind  Kind
	s     string // string contents, number literal, or "true"/"false"
	elems []*Value
	mems  []Member
}

// Member is one key of an object.
type Member struct {
	Key   string
	Value *Value
}

// NewString builds a string node.
func NewString(s string) *Value { return &Value{kind: String, s: s} }

// NewInt builds an integer node.
func NewInt(n int64) *Value { return &Value{kind: Number, s: strconv.FormatInt(n, 10)} }

// NewFloat builds a number node written as JavaScript's Number toString
// writes it (shortest round-trip form); NaN and infinities become null, as
// in JSON.stringify.
func NewFloat(f float64) *Value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return NewNull()
	}
	return &Value{kind: Number, s: jsNumber(f)}
}

// NewBool builds a boolean node.
func NewBool(b bool) *Value {
	if b {
		return &Value{kind: Bool, s: "true"}
	}
	return &Value{kind: Bool, s: "false"}
}

// NewNull builds a null node.
func NewNull() *Value { return &Value{kind: Null} }

// NewArray builds an array node.
func NewArray(elems ...*Value) *Value { return &Value{kind: Array, elems: elems} }

// NewObject builds an object node; members keep the given order.
func NewObject(mems ...Member) *Value { return &Value{kind: Object, mems: mems} }

// Kind reports the node's type; a nil Value is Null.
func (v *Value) Kind() Kind {
	if v == nil {
		return Null
	}
	return v.kind
}

// Str returns the contents of a string node.
func (v *Value) Str() (string, bool) {
	if v == nil || v.kind != String {
		return "", false
	}
	return v.s, true
}

// Literal returns a number's source text.
func (v *Value) Literal() string {
	if v == nil || v.kind != Number {
		return ""
	}
	return v.s
}

// Truthy reports a true boolean.
func (v *Value) Truthy() bool { return v != nil && v.kind == Bool && v.s == "true" }

// Int64 reads a number (or a numeric string) as an integer, truncating
// fractions.
func (v *Value) Int64() (int64, bool) {
	if v == nil || (v.kind != Number && v.kind != String) {
		return 0, false
	}
	if n, err := strconv.ParseInt(v.s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(v.s, 64)
	if err != nil {
		return 0, false
	}
	return int64(f), true
}

// Elems returns an array's elements.
func (v *Value) Elems() []*Value {
	if v == nil || v.kind != Array {
		return nil
	}
	return v.elems
}

// Members returns an object's members in order.
func (v *Value) Members() []Member {
	if v == nil || v.kind != Object {
		return nil
	}
	return v.mems
}

// Get returns an object's member; with duplicate keys the last one wins, as
// in JSON.parse.
func (v *Value) Get(key string) *Value {
	if v == nil || v.kind != Object {
		return nil
	}
	for i := len(v.mems) - 1; i >= 0; i-- {
		if v.mems[i].Key == key {
			return v.mems[i].Value
		}
	}
	return nil
}

// Path follows nested object keys.
func (v *Value) Path(keys ...string) *Value {
	for _, k := range keys {
		v = v.Get(k)
	}
	return v
}

// Set replaces a member in place (keeping its position) or appends it.
func (v *Value) Set(key string, val *Value) {
	if v == nil || v.kind != Object {
		return
	}
	for i := len(v.mems) - 1; i >= 0; i-- {
		if v.mems[i].Key == key {
			v.mems[i].Value = val
			return
		}
	}
	v.mems = append(v.mems, Member{Key: key, Value: val})
}

// setAll sets several members, growing the member list at most once.
func (v *Value) setAll(ms ...Member) {
	if v == nil || v.kind != Object {
		return
	}
	var missing []Member
	for _, m := range ms {
		found := false
		for i := len(v.mems) - 1; i >= 0; i-- {
			if v.mems[i].Key == m.Key {
				v.mems[i].Value, found = m.Value, true
				break
			}
		}
		if !found {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		v.mems = append(v.mems[:len(v.mems):len(v.mems)], missing...)
	}
}

// Append adds elements to an array.
func (v *Value) Append(vals ...*Value) {
	if v == nil || v.kind != Array {
		return
	}
	v.elems = append(v.elems, vals...)
}

// ensureObject returns v's member key, replacing it with an empty object when
// it is missing or not an object.
func (v *Value) ensureObject(key string) *Value {
	m := v.Get(key)
	if m.Kind() != Object {
		m = NewObject()
		v.Set(key, m)
	}
	return m
}

func (v *Value) ensureArray(key string) *Value {
	m := v.Get(key)
	if m.Kind() != Array {
		m = NewArray()
		v.Set(key, m)
	}
	return m
}
