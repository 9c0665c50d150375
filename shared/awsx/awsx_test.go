package awsx

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

func TestClientsKeepDefaultsWithoutEndpoint(t *testing.T) {
	t.Parallel()
	cfg := aws.Config{Region: "eu-west-1"}
	tests := []struct {
		name     string
		endpoint string
	}{
		{"production", ""},
		{"override", "http://127.0.0.1:9000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			override := tt.endpoint != ""
			s3o := NewS3Client(cfg, tt.endpoint).Options()
			if got := aws.ToString(s3o.BaseEndpoint); got != tt.endpoint {
				t.Errorf("s3 BaseEndpoint = %q, want %q", got, tt.endpoint)
			}
			if s3o.UsePathStyle != override {
				t.Errorf("s3 UsePathStyle = %v, want %v", s3o.UsePathStyle, override)
			}
			wantReq, wantResp := aws.RequestChecksumCalculationUnset, aws.ResponseChecksumValidationUnset
			if override {
				wantReq, wantResp = aws.RequestChecksumCalculationWhenRequired, aws.ResponseChecksumValidationWhenRequired
			}
			if s3o.RequestChecksumCalculation != wantReq || s3o.ResponseChecksumValidation != wantResp {
				t.Errorf("s3 checksums = %v/%v, want %v/%v", s3o.RequestChecksumCalculation, s3o.ResponseChecksumValidation, wantReq, wantResp)
			}
			if got := aws.ToString(NewSecretsClient(cfg, tt.endpoint).Options().BaseEndpoint); got != tt.endpoint {
				t.Errorf("secretsmanager BaseEndpoint = %q, want %q", got, tt.endpoint)
			}
			if got := aws.ToString(NewSFNClient(cfg, tt.endpoint).Options().BaseEndpoint); got != tt.endpoint {
				t.Errorf("sfn BaseEndpoint = %q, want %q", got, tt.endpoint)
			}
		})
	}
}
