package codex

// Edit types the editor writes for machine output. Every other type
// (user-edit, initial-import, migration, merge, …) records a person's work
// or a copy of it.
var generatedEditTypes = map[string]bool{"llm-generation": true, "llm-edit": true}

// hasActiveValidation reports a validatedBy list with an entry the editor
// counts: an object naming a user and not withdrawn (isDeleted).
func hasActiveValidation(list *Value) bool {
	for _, e := range list.Elems() {
		if e.Kind() != Object || e.Get("isDeleted").Truthy() {
			continue
		}
		if u, ok := e.Get("username").Str(); ok && u != "" {
			return true
		}
	}
	return false
}

func isValueEdit(e *Value) bool {
	m := e.Get("editMap").Elems()
	if len(m) != 1 {
		return false
	}
	k, _ := m[0].Str()
	return k == "value"
}

// valueEdit returns the edit behind the cell's current value, as the editor
// finds it: the newest value edit whose value equals the cell's, else the
// newest value edit that is not a preview; nil when the cell has none (an
// imported value without history).
func (c *Cell) valueEdit() *Value {
	cur := c.Value()
	var match, newest *Value
	var matchTS, newestTS int64
	for _, e := range c.meta().Get("edits").Elems() {
		if !isValueEdit(e) {
			continue
		}
		ts, _ := e.Get("timestamp").Int64()
		if v, _ := e.Get("value").Str(); v == cur && (match == nil || ts >= matchTS) {
			match, matchTS = e, ts
		}
		if !e.Get("preview").Truthy() && (newest == nil || ts >= newestTS) {
			newest, newestTS = e, ts
		}
	}
	if match != nil {
		return match
	}
	return newest
}

// HumanText reports that the cell's current text is a person's work: its
// value comes from a human edit (or has no recorded history), or from a
// generated edit (llm-generation, llm-edit) that a person validated.
func (c *Cell) HumanText() bool {
	e := c.valueEdit()
	if e == nil {
		return true
	}
	typ, _ := e.Get("type").Str()
	return !generatedEditTypes[typ] || hasActiveValidation(e.Get("validatedBy"))
}
