package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Problem is one thing wrong in a config file.
type Problem struct {
	Path    string `json:"path,omitempty"` // key path, e.g. "exports.vip.match.email"; empty for the whole file
	Line    int    `json:"line,omitempty"` // 1-based; 0 when unknown
	Message string `json:"message"`        // what is wrong and what to do
}

// ValidationError lists every problem found in a config file.
type ValidationError struct {
	File     string
	Problems []Problem
}

// Error gives one line per problem: "FILE:LINE: PATH: MESSAGE".
func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
		if p.Path != "" {
			b.WriteString(p.Path + ": ")
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// Codes of NotRunnableError.
const (
	CodeDisabled  = "disabled"
	CodeNoConsent = "no-consent"
)

// NotRunnableError says why a valid export must not run.
type NotRunnableError struct {
	Export string
	Reason string
	Code   string // CodeDisabled or CodeNoConsent
}

func (e *NotRunnableError) Error() string {
	return fmt.Sprintf("export %q cannot run: %s", e.Export, e.Reason)
}

// UnknownExportError is returned by Config.Export for a name not in the file.
type UnknownExportError struct {
	File  string
	Name  string
	Known []string // sorted
}

func (e *UnknownExportError) Error() string {
	msg := fmt.Sprintf("export %q is not defined in %s", e.Name, e.File)
	if s, ok := closest(e.Name, e.Known); ok {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + "; defined: " + strings.Join(e.Known, ", ")
}
