package secrets

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// Options selects and configures the Sealer that New builds.
type Options struct {
	// MasterKey is the local master key, MasterKeyLen bytes (see
	// ParseMasterKey). Without KMSKeyID it seals and opens; with KMSKeyID
	// it only opens blobs sealed before KMS was configured.
	MasterKey []byte
	// KMSKeyID selects KMS mode: the key id, key ARN, alias name or alias
	// ARN under which data keys are generated.
	KMSKeyID string
	// KMSEndpoint overrides the KMS endpoint URL (a VPC endpoint, or a
	// local KMS in tests). Empty means the SDK's default resolution.
	KMSEndpoint string
	// AWSRegion overrides the region from the SDK's default configuration
	// chain. When both are empty and KMSKeyID is an ARN, the ARN's region is
	// used.
	AWSRegion string
}

// New returns the Sealer selected by opts: KMS when opts.KMSKeyID is set
// (with credentials and settings from the AWS SDK's default configuration
// chain, config.LoadDefaultConfig), else Local under opts.MasterKey. It makes
// no KMS call, so a missing permission or unreachable KMS surfaces on first
// use.
func New(ctx context.Context, opts Options) (Sealer, error) {
	var local *Local
	if len(opts.MasterKey) > 0 {
		l, err := NewLocal(opts.MasterKey)
		if err != nil {
			return nil, err
		}
		local = l
	}
	if opts.KMSKeyID == "" {
		if local == nil {
			return nil, errors.New("secrets: neither a KMS key id nor a master key is configured; set one to store Bedrock credentials")
		}
		return local, nil
	}

	var loadOpts []func(*config.LoadOptions) error
	if opts.AWSRegion != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.AWSRegion))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("secrets: load AWS configuration for KMS key %s: %w", opts.KMSKeyID, err)
	}
	if cfg.Region == "" {
		if a, err := arn.Parse(opts.KMSKeyID); err == nil && a.Region != "" {
			cfg.Region = a.Region
		} else {
			return nil, fmt.Errorf("secrets: KMS key id %s is set but no AWS region is configured; set the AWS region", opts.KMSKeyID)
		}
	}
	client := kms.NewFromConfig(cfg, func(o *kms.Options) {
		if opts.KMSEndpoint != "" {
			o.BaseEndpoint = aws.String(opts.KMSEndpoint)
		}
	})
	k := NewKMS(client, opts.KMSKeyID)
	if local != nil {
		k = k.WithLocal(local)
	}
	return k, nil
}

// ParseMasterKey decodes a master key given as text: MasterKeyLen bytes in
// hex, or in standard or URL-safe base64 with or without padding.
// Surrounding whitespace, such as the newline ending a file, is ignored.
// Errors never contain s.
func ParseMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("secrets: master key is empty")
	}
	if len(s) == hex.EncodedLen(MasterKeyLen) {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	// The base64 decoder skips '\r' and '\n' anywhere; a key never has them.
	if !strings.ContainsAny(s, "\r\n") {
		for _, enc := range []*base64.Encoding{
			base64.StdEncoding.Strict(), base64.RawStdEncoding.Strict(),
			base64.URLEncoding.Strict(), base64.RawURLEncoding.Strict(),
		} {
			if b, err := enc.DecodeString(s); err == nil && len(b) == MasterKeyLen {
				return b, nil
			}
		}
	}
	return nil, fmt.Errorf("secrets: master key (%d characters) is not %d bytes in hex or base64; generate one with `openssl rand -base64 32`", len(s), MasterKeyLen)
}
