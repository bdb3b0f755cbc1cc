// Package tws implements the TWS API socket protocol spoken by IB Gateway and
// Trader Workstation, for server versions MinServerVersion..MaxServerVersion:
// the handshake, length-prefixed framing, the NUL-separated field codec and
// typed messages in both directions.
//
// The package is shared by the client (package client) and the gateway
// simulator (package ibsim), so every message can be both encoded and decoded
// by either side. It performs no I/O of its own beyond the io.Reader and
// io.Writer it is given and starts no goroutines.
//
// Layouts follow the server version negotiated in the handshake: a message
// type's AppendTo and the matching Decode function take that version and read
// or write exactly the fields a gateway of that version sends.
package tws

// Server versions this package speaks. Versions 157..178 are plain text; from
// 201 on the gateway prefixes binary message ids and moves many messages to
// protobuf, which this package does not implement.
const (
	MinServerVersion = 157
	MaxServerVersion = 178
)

// Server version thresholds that change a layout inside MinServerVersion..MaxServerVersion,
// named after the constants of IB's reference client.
const (
	// VerFractionalSizeSupport adds contractData's sizeMinTick (163 only; replaced at 164).
	VerFractionalSizeSupport = 163
	// VerSizeRules drops contractData's version and mdSizeMultiplier fields and adds
	// minSize, sizeIncrement and suggestedSizeIncrement.
	VerSizeRules = 164
	// VerAdvancedOrderReject adds advancedOrderRejectJson to the error message.
	VerAdvancedOrderReject = 166
	// VerBondIssuerID adds issuerId to reqContractDetails and description/issuerId
	// to symbolSamples.
	VerBondIssuerID = 176
)
