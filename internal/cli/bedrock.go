package cli

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

// bedrockTarget resolves --user or --key to the API path of the
// credential and a description for messages.
func bedrockTarget(userID, keyID string) (path, what string, err error) {
	switch {
	case (userID == "") == (keyID == ""):
		return "", "", errors.New("give exactly one of --user USER_ID or --key KEY_ID")
	case userID != "":
		return "/api/v1/users/" + pathID(userID) + "/bedrock", "user " + userID, nil
	default:
		return "/api/v1/keys/" + pathID(keyID) + "/bedrock", "key " + keyID, nil
	}
}

func (a *app) bedrockCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bedrock",
		Short: "Manage the AWS Bedrock credential of a user, or of one key as an override",
	}
	g := addGlobals(cmd)
	cmd.AddCommand(a.bedrockSet(g), a.bedrockDelete(g))
	return cmd
}

func (a *app) bedrockSet(g *globals) *cobra.Command {
	var userID, keyID, typ, region string
	var keyStdin bool
	cmd := &cobra.Command{
		Use:   "set (--user USER_ID | --key KEY_ID) --type api_key|aws_default_chain --region REGION [--api-key-stdin]",
		Short: "Set the Bedrock credential used when requests go to Bedrock",
		Long: `Set the Bedrock credential used when requests go to Bedrock.

With --type api_key the Bedrock API key is read from stdin (--api-key-stdin) or
from $` + EnvBedrockAPIKey + `; it is never taken from argv and never shown again.
With --type aws_default_chain the gateway uses its own AWS credentials.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, what, err := bedrockTarget(userID, keyID)
			if err != nil {
				return err
			}
			req := map[string]any{"type": typ, "region": region}
			switch typ {
			case "api_key":
				var key string
				if keyStdin {
					if key, err = readSecret(cmd.InOrStdin(), "Bedrock API key"); err != nil {
						return err
					}
				} else if key = a.getenv(EnvBedrockAPIKey); key == "" {
					return errors.New("--type api_key needs the key: use --api-key-stdin or set " + EnvBedrockAPIKey)
				}
				req["api_key"] = key
			case "aws_default_chain":
				if keyStdin {
					return errors.New("--api-key-stdin is only for --type api_key")
				}
			default:
				return fmt.Errorf("--type must be api_key or aws_default_chain, not %q", typ)
			}
			if _, err := a.call(cmd.Context(), g, http.MethodPut, path, nil, req); err != nil {
				return err
			}
			if g.json() {
				return nil
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Set the Bedrock credential of %s (%s, %s).\n", what, typ, region)
			return err
		},
	}
	cmd.Flags().StringVar(&userID, "user", "", "the user whose credential to set")
	cmd.Flags().StringVar(&keyID, "key", "", "the access key whose override to set")
	cmd.Flags().StringVar(&typ, "type", "api_key", "api_key or aws_default_chain")
	cmd.Flags().StringVar(&region, "region", "", "AWS region, e.g. us-east-1")
	cmd.Flags().BoolVar(&keyStdin, "api-key-stdin", false, "read the Bedrock API key from stdin")
	_ = cmd.MarkFlagRequired("region")
	return cmd
}

func (a *app) bedrockDelete(g *globals) *cobra.Command {
	var userID, keyID string
	cmd := &cobra.Command{
		Use:   "delete (--user USER_ID | --key KEY_ID)",
		Short: "Remove a Bedrock credential",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, what, err := bedrockTarget(userID, keyID)
			if err != nil {
				return err
			}
			if _, err := a.call(cmd.Context(), g, http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			if g.json() {
				return nil
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Removed the Bedrock credential of %s.\n", what)
			return err
		},
	}
	cmd.Flags().StringVar(&userID, "user", "", "the user whose credential to remove")
	cmd.Flags().StringVar(&keyID, "key", "", "the access key whose override to remove")
	return cmd
}
