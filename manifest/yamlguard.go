package manifest

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"gpu-worker/limits"
)

// maxExpandedNodes bounds what a document's aliases may expand to: a
// "billion laughs" file is a few lines that expand to billions of nodes.
const maxExpandedNodes = 1_000_000

// checkYAML parses a document into its node tree (which keeps aliases
// unexpanded) and refuses it when it has more aliases than allowed, or
// aliases that expand past maxExpandedNodes. The tree it returns is what
// the caller decodes (decodeNode), so the bytes are parsed once.
func checkYAML(data []byte, kind, what string, maxAliases int) (*yaml.Node, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parse %s: %w", kind, err)
	}
	aliases := 0
	memo := map[*yaml.Node]int{}
	var size func(n *yaml.Node, depth int) (int, error)
	size = func(n *yaml.Node, depth int) (int, error) {
		if n == nil {
			return 0, nil
		}
		if depth > 10_000 {
			return 0, fmt.Errorf("%s nests too deeply", what)
		}
		if v, ok := memo[n]; ok {
			return v, nil
		}
		total := 1
		if n.Kind == yaml.AliasNode {
			aliases++
			if aliases > maxAliases {
				return 0, &limits.Exceeded{Path: what, What: fmt.Sprintf("has more than %d YAML aliases", maxAliases),
					Limit: fmt.Sprintf("%d aliases", maxAliases), Setting: "max-yaml-aliases"}
			}
			t, err := size(n.Alias, depth+1)
			if err != nil {
				return 0, err
			}
			total += t
		}
		for _, c := range n.Content {
			t, err := size(c, depth+1)
			if err != nil {
				return 0, err
			}
			total += t
			if total > maxExpandedNodes {
				return 0, &limits.Exceeded{Path: what, What: "expands through its YAML aliases to over a million values",
					Limit: "a million values", Setting: "max-yaml-aliases"}
			}
		}
		if n.Kind != yaml.AliasNode {
			memo[n] = total
		}
		return total, nil
	}
	if _, err := size(&root, 0); err != nil {
		return nil, err
	}
	return &root, nil
}

// decodeNode decodes a tree checkYAML returned; an empty document decodes
// to v's zero value, as yaml.Unmarshal leaves it.
func decodeNode(root *yaml.Node, v any) error {
	if root.Kind == 0 {
		return nil
	}
	return root.Decode(v)
}
