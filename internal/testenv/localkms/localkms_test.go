package localkms

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

func TestStart(t *testing.T) {
	s := Start(t)
	if len(s.Keys) != 2 || s.Keys[0].ID == s.Keys[1].ID {
		t.Fatalf("Keys = %+v, want two distinct keys", s.Keys)
	}
	for _, k := range s.Keys {
		want := "arn:aws:kms:" + Region + ":" + AccountID + ":key/" + k.ID
		if k.ARN != want {
			t.Errorf("ARN = %q, want %q", k.ARN, want)
		}
	}

	ctx := context.Background()
	s.SetAWSEnv(t)
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	viaEnv := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(s.Endpoint) })

	tests := []struct {
		name   string
		client *kms.Client
		keyID  string
		want   string
	}{
		{"static client by id", s.Client(), s.Keys[0].ID, s.Keys[0].ARN},
		{"static client by alias", s.Client(), Alias, s.Keys[0].ARN},
		{"default config by ARN", viaEnv, s.Keys[1].ARN, s.Keys[1].ARN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc, err := tt.client.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(tt.keyID), Plaintext: []byte("hello")})
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if aws.ToString(enc.KeyId) != tt.want {
				t.Errorf("Encrypt KeyId = %q, want %q", aws.ToString(enc.KeyId), tt.want)
			}
			dec, err := tt.client.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(dec.Plaintext, []byte("hello")) || aws.ToString(dec.KeyId) != tt.want {
				t.Errorf("Decrypt = %q under %q, want %q under %q", dec.Plaintext, aws.ToString(dec.KeyId), "hello", tt.want)
			}
		})
	}
}

func TestCreateKeyDescribes(t *testing.T) {
	s := Start(t)
	k := s.CreateKey(t)
	out, err := s.Client().DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(k.ID)})
	if err != nil {
		t.Fatal(err)
	}
	md := out.KeyMetadata
	if aws.ToString(md.Arn) != k.ARN || md.KeyUsage != types.KeyUsageTypeEncryptDecrypt || !strings.Contains(aws.ToString(md.Description), t.Name()) {
		t.Fatalf("DescribeKey = %+v, want %+v", md, k)
	}
}
