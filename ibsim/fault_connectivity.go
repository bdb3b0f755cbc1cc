package ibsim

import (
	"errors"

	"github.com/ktrdr/ktrdr/tws"
)

// ConnectivityLoss simulates the gateway losing its link to IB's servers
// while the API socket stays up: 1100 to every client, market-data requests
// fail meanwhile (reqCurrentTime is still answered, from the gateway's own
// clock, which is why a pool cannot rely on it alone), then 1102 — or 1101
// when DataLost — once the fault ends. Give it a duration_ms, or clear it.
type ConnectivityLoss struct {
	Passive
	DataLost bool `json:"data_lost"`
}

// Kind implements Fault.
func (*ConnectivityLoss) Kind() string { return "connectivity_loss" }

// Start implements Fault.
func (*ConnectivityLoss) Start(c Control) {
	c.Send(&tws.ErrorMsg{ReqID: tws.NoRequestID, Code: CodeConnectivityLost,
		Text: "Connectivity between IB and Trader Workstation has been lost."})
}

// Stop implements Fault.
func (f *ConnectivityLoss) Stop(c Control) {
	m := &tws.ErrorMsg{ReqID: tws.NoRequestID, Code: CodeRestoredDataKept,
		Text: "Connectivity between IB and Trader Workstation has been restored - data maintained."}
	if f.DataLost {
		m.Code, m.Text = CodeRestoredDataLost, "Connectivity between IB and Trader Workstation has been restored - data lost."
	}
	c.Send(m)
}

// Intercept implements Fault.
func (*ConnectivityLoss) Intercept(ev *Event) {
	if ev.Kind != EvRequest {
		return
	}
	switch ev.Message.(type) {
	case *tws.ReqHistoricalData, *tws.ReqHeadTimestamp:
		ev.Reject = &tws.ErrorMsg{ReqID: requestID(ev.Message), Code: CodeHMDS,
			Text: hmdsPrefix + "HMDS server disconnect occurred.  Attempting reconnection..."}
	case *tws.ReqContractDetails, *tws.ReqMatchingSymbols:
		ev.Reject = &tws.ErrorMsg{ReqID: requestID(ev.Message), Code: CodeNoSecDef,
			Text: "No security definition has been found for the request"}
	}
}

// FarmBroken reports one data farm broken (2103 usfarm, 2105 hmds, 2157
// secdef), then OK (2104, 2106, 2158) when it ends. While the HMDS farm is
// broken historical and head-timestamp requests fail with 162; while the
// sec-def farm is broken contract lookups fail with 200.
type FarmBroken struct {
	Passive
	Farm string `json:"farm"`
}

// Kind implements Fault.
func (*FarmBroken) Kind() string { return "farm_broken" }

func (f *FarmBroken) validate() error {
	switch f.Farm {
	case "hmds", "usfarm", "secdef":
		return nil
	}
	return errors.New(`farm must be "hmds", "usfarm" or "secdef"`)
}

// farmNotices returns the broken and OK notices of the fault's farm.
func (f *FarmBroken) farmNotices() (broken, ok *tws.ErrorMsg) {
	switch f.Farm {
	case "usfarm":
		return notice(CodeMarketFarmBroken, "Market data farm connection is broken:usfarm"),
			notice(CodeMarketFarmOK, "Market data farm connection is OK:usfarm")
	case "secdef":
		return notice(CodeSecDefFarmBroken, "Sec-def data farm connection is broken:secdefil"),
			notice(CodeSecDefFarmOK, "Sec-def data farm connection is OK:secdefil")
	}
	return notice(CodeHMDSFarmBroken, "HMDS data farm connection is broken:ushmds"),
		notice(CodeHMDSFarmOK, "HMDS data farm connection is OK:ushmds")
}

// Start implements Fault.
func (f *FarmBroken) Start(c Control) {
	broken, _ := f.farmNotices()
	c.Send(broken)
}

// Stop implements Fault.
func (f *FarmBroken) Stop(c Control) {
	_, ok := f.farmNotices()
	c.Send(ok)
}

// Intercept implements Fault.
func (f *FarmBroken) Intercept(ev *Event) {
	if ev.Kind != EvRequest {
		return
	}
	switch ev.Message.(type) {
	case *tws.ReqHistoricalData, *tws.ReqHeadTimestamp:
		if f.Farm == "hmds" {
			ev.Reject = &tws.ErrorMsg{ReqID: requestID(ev.Message), Code: CodeHMDS,
				Text: hmdsPrefix + "HMDS data farm connection is broken:ushmds"}
		}
	case *tws.ReqContractDetails:
		if f.Farm == "secdef" {
			ev.Reject = &tws.ErrorMsg{ReqID: requestID(ev.Message), Code: CodeNoSecDef,
				Text: "No security definition has been found for the request"}
		}
	}
}

func notice(code int, text string) *tws.ErrorMsg {
	return &tws.ErrorMsg{ReqID: tws.NoRequestID, Code: code, Text: text}
}
