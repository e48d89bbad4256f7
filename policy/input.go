package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// InputFromJSON parses one JSON document into the AST value Eval takes, for
// tools such as `gatehousectl policy eval --input file.json`. Numbers keep
// their exact text. The server should build its input as ast values directly
// rather than going through JSON.
func InputFromJSON(data []byte) (ast.Value, error) {
	dec := util.NewJSONDecoder(bytes.NewReader(data))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("input: trailing data after the JSON document")
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	return v, nil
}
