// Package awsx builds the AWS SDK clients segpilot's Lambda functions use.
// Production keeps every SDK default; an endpoint override (for a local fake
// such as gofakes3) switches on the few settings such fakes need.
package awsx

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
)

// Environment variables naming endpoint overrides. Callers read them and pass
// the value (empty in production) to the constructors below.
const (
	EnvS3Endpoint      = "SEGPILOT_S3_ENDPOINT"
	EnvSecretsEndpoint = "SEGPILOT_SECRETS_ENDPOINT"
	EnvSFNEndpoint     = "SEGPILOT_SFN_ENDPOINT"
)

// LoadConfig loads the default AWS configuration (Lambda's environment
// credentials and region). It deliberately sets no HTTP client: with
// AWS_CA_BUNDLE set, config.WithHTTPClient fails to load.
func LoadConfig(ctx context.Context) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS config: %w", err)
	}
	return cfg, nil
}

// NewS3Client returns an S3 client. With a non-empty endpoint it talks to that
// URL with path-style addressing and computes/validates checksums only when an
// operation requires them, which S3 fakes need (gofakes3 fails ranged GETs on
// response checksums and stores aws-chunked trailers as object data).
func NewS3Client(cfg aws.Config, endpoint string) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint == "" {
			return
		}
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// NewSecretsClient returns a Secrets Manager client, pointed at endpoint when
// it is non-empty.
func NewSecretsClient(cfg aws.Config, endpoint string) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
}

// NewSFNClient returns a Step Functions client, pointed at endpoint when it
// is non-empty.
func NewSFNClient(cfg aws.Config, endpoint string) *sfn.Client {
	return sfn.NewFromConfig(cfg, func(o *sfn.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
}
