// Package smsecrets implements secrets.Source on AWS Secrets Manager.
package smsecrets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/segpilot/segpilot/shared/secrets"
)

// JSONField is the field read when a secret is stored as a JSON object, which
// is what the Secrets Manager console writes for key/value secrets.
const JSONField = "apiKey"

// Source reads secrets' current versions (AWSCURRENT) from Secrets Manager.
// Wrap it in a secrets.Cache: every call here is a billed API request.
type Source struct {
	client *secretsmanager.Client
}

var _ secrets.Source = (*Source)(nil)

// New returns a source using client.
func New(client *secretsmanager.Client) *Source {
	return &Source{client: client}
}

// Secret returns the API key stored under id (a secret name or ARN). The
// SecretString is either the key itself or a JSON object {"apiKey": "..."}.
// A missing secret wraps secrets.ErrNotFound, one holding no key (empty,
// or {"apiKey": ""} as the stack creates it) secrets.ErrEmpty. No error
// carries the value.
func (s *Source) Secret(ctx context.Context, id string) (string, error) {
	out, err := s.client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
	if err != nil {
		var notFound *types.ResourceNotFoundException
		if errors.As(err, &notFound) {
			return "", fmt.Errorf("reading secret %s: %w", id, secrets.ErrNotFound)
		}
		return "", fmt.Errorf("reading secret %s: %w", id, err)
	}
	if out.SecretString == nil {
		return "", fmt.Errorf("secret %s has no SecretString (binary secrets are not supported)", id)
	}
	value, err := parse(*out.SecretString)
	if err != nil {
		return "", fmt.Errorf("secret %s: %w", id, err)
	}
	return value, nil
}

// parse extracts the key. Its errors describe the shape only: encoding/json
// errors can quote parts of the input, so they are not wrapped.
func parse(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", fmt.Errorf("SecretString is empty: %w", secrets.ErrEmpty)
	}
	if !strings.HasPrefix(raw, "{") {
		return raw, nil
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	if err := dec.Decode(&obj); err != nil || dec.More() {
		return "", fmt.Errorf("SecretString starts with '{' but is not a JSON object; store the bare key or {%q: \"...\"}", JSONField)
	}
	v, ok := obj[JSONField]
	if !ok {
		return "", fmt.Errorf("SecretString is a JSON object without an %q field", JSONField)
	}
	key, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("SecretString field %q is not a string", JSONField)
	}
	if key = strings.TrimSpace(key); key == "" {
		return "", fmt.Errorf("SecretString field %q is empty: %w", JSONField, secrets.ErrEmpty)
	}
	return key, nil
}
