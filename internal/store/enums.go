package store

import "fmt"

// RoutingStrategy decides where a user's (or key's) requests go.
type RoutingStrategy string

// Routing strategies.
const (
	// PlanFirst sends requests to Plan and falls back to Bedrock.
	PlanFirst RoutingStrategy = "plan_first"
	// BedrockOnly never calls Plan.
	BedrockOnly RoutingStrategy = "bedrock_only"
	// PlanOnly never calls Bedrock.
	PlanOnly RoutingStrategy = "plan_only"
)

// Valid reports whether r is a known strategy.
func (r RoutingStrategy) Valid() bool {
	return r == PlanFirst || r == BedrockOnly || r == PlanOnly
}

// UserStatus is whether a user may use the gateway.
type UserStatus string

// User statuses.
const (
	UserActive   UserStatus = "active"
	UserDisabled UserStatus = "disabled"
)

// Valid reports whether s is a known status.
func (s UserStatus) Valid() bool { return s == UserActive || s == UserDisabled }

// KeyStatus is the life-cycle state of an access key.
type KeyStatus string

// Access key statuses.
const (
	// KeyActive keys authenticate.
	KeyActive KeyStatus = "active"
	// KeyRotating keys were replaced and authenticate until their grace
	// period ends.
	KeyRotating KeyStatus = "rotating"
	// KeyRevoked keys never authenticate again.
	KeyRevoked KeyStatus = "revoked"
)

// Valid reports whether s is a known status.
func (s KeyStatus) Valid() bool { return s == KeyActive || s == KeyRotating || s == KeyRevoked }

// CredentialKind is how ccproxy authenticates to Bedrock.
type CredentialKind string

// Bedrock credential kinds.
const (
	// CredentialAPIKey is a Bedrock API key sent as a bearer token; its
	// ciphertext is stored.
	CredentialAPIKey CredentialKind = "api_key"
	// CredentialAWSDefaultChain signs with SigV4 using the ambient AWS
	// credential chain (IRSA on Kubernetes); nothing secret is stored.
	CredentialAWSDefaultChain CredentialKind = "aws_default_chain"
)

// Valid reports whether k is a known kind.
func (k CredentialKind) Valid() bool { return k == CredentialAPIKey || k == CredentialAWSDefaultChain }

// Provider is the upstream that served (or prices) a request.
type Provider string

// Providers.
const (
	// ProviderAnthropic is Plan: Anthropic's API with the developer's own
	// credential.
	ProviderAnthropic Provider = "anthropic"
	// ProviderBedrock is AWS Bedrock with the gateway's credential.
	ProviderBedrock Provider = "bedrock"
)

// Valid reports whether p is a known provider.
func (p Provider) Valid() bool { return p == ProviderAnthropic || p == ProviderBedrock }

// RequestKind is the API a usage event belongs to.
type RequestKind string

// Request kinds.
const (
	KindMessages    RequestKind = "messages"
	KindCountTokens RequestKind = "count_tokens"
)

// Valid reports whether k is a known kind.
func (k RequestKind) Valid() bool { return k == KindMessages || k == KindCountTokens }

// PriceFlag records how an event's price was found.
type PriceFlag string

// Price flags.
const (
	// PriceNone: nothing billable (e.g. count_tokens).
	PriceNone PriceFlag = ""
	// PriceExact: a price row for the model itself.
	PriceExact PriceFlag = "exact"
	// PriceFamily: the model's family price; the model has no row.
	PriceFamily PriceFlag = "family"
	// PriceDefault: the provider default; neither model nor family priced.
	PriceDefault PriceFlag = "default"
)

// Valid reports whether f is a known flag.
func (f PriceFlag) Valid() bool {
	return f == PriceNone || f == PriceExact || f == PriceFamily || f == PriceDefault
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// SeatType is a developer's seat, for seat economics.
type SeatType string

// Seat types: Claude Pro, Max 5×, Max 20×, or pay-as-you-go API.
const (
	SeatPro    SeatType = "pro"
	SeatMax5x  SeatType = "max_5x"
	SeatMax20x SeatType = "max_20x"
	SeatAPI    SeatType = "api"
)

// SeatTypes returns the seat types, cheapest subscription first.
func SeatTypes() []SeatType { return []SeatType{SeatPro, SeatMax5x, SeatMax20x, SeatAPI} }

// Valid reports whether s is a known seat type.
func (s SeatType) Valid() bool {
	return s == SeatPro || s == SeatMax5x || s == SeatMax20x || s == SeatAPI
}
