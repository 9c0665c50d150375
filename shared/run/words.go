package run

// Words is what segpilot tells a person to do, in the words of where it
// runs: Lambda's invocations and secrets, or the local CLI's flags and
// environment variables. Every message that names a command goes through
// it, so the core never mixes the two.
type Words interface {
	// LiftBrake says how to lift the mirror safety brake for one run.
	LiftBrake(export string) string
	// LiftBrakeCommand is the exact command that does it for src, shown on
	// a held run's page.
	LiftBrakeCommand(export string, src Source) string
	// SetKey says how to put an API key in place for a connection of kind.
	SetKey(kind string) string
	// CheckKey says where to check (and replace) a key that was refused.
	CheckKey(kind string) string
	// EndedEarly says how an attempt that a drainer closed ended.
	EndedEarly(h Holder) string
}

// LambdaWords are the AWS deployment's.
type LambdaWords struct{}

var _ Words = LambdaWords{}

func (LambdaWords) LiftBrake(export string) string {
	return `invoke the refresh function with {"export": "` + export + `", "allowLargeRemoval": true}`
}

func (LambdaWords) LiftBrakeCommand(export string, _ Source) string {
	return `aws lambda invoke --function-name "$RefreshFunctionName" --cli-binary-format raw-in-base64-out --payload '{"export":"` +
		export + `","allowLargeRemoval":true}' out.json`
}

func (LambdaWords) SetKey(string) string {
	return `create the connection's apiKeySecret, or put the key into it (aws secretsmanager create-secret ` +
		`--name segpilot/... --secret-string '{"apiKey":"..."}', or put-secret-value --secret-id segpilot/...)`
}

func (LambdaWords) CheckKey(string) string {
	return `check that the connection's apiKeySecret holds the account's current key (aws secretsmanager put-secret-value ` +
		`--secret-id segpilot/... --secret-string '{"apiKey":"..."}' replaces it)`
}

func (LambdaWords) EndedEarly(h Holder) string {
	return "execution " + h.Execution + " ended before the run finished (stopped by hand, timed out, or its finalize failed)"
}
