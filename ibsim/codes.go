package ibsim

// More IB message codes the simulator sends (CodeHMDS, CodeNoSecDef and
// CodeValidation stand beside the bar-size rules). Texts are the gateway's own wording.
const (
	CodeRateExceeded      = 100
	CodeClientIDInUse     = 326
	CodeNoHistoricalQuery = 366
	CodeConnectivityLost  = 1100
	CodeRestoredDataLost  = 1101
	CodeRestoredDataKept  = 1102
	CodeMarketFarmBroken  = 2103
	CodeMarketFarmOK      = 2104
	CodeHMDSFarmBroken    = 2105
	CodeHMDSFarmOK        = 2106
	CodeSecDefFarmBroken  = 2157
	CodeSecDefFarmOK      = 2158
)
