package schemas

import (
	"fmt"
	"slices"
)

// Roles lists every agent role, in the order briefings and docs name them.
var Roles = []string{RoleMayor, RolePolecat, RoleRefinery, RoleTriage}

// ToolRoles is which roles may call each tool method: the one table the
// coordinator's middleware enforces and `gastown mcp` lists tools from,
// so the two cannot drift. A method with no roles is for every agent
// (ping also answers the container itself). A method missing from the
// table is for no one.
var ToolRoles = map[string][]string{
	ToolPing:       nil,
	ToolPrime:      nil,
	ToolBeadGet:    nil,
	ToolBeadClose:  nil,
	ToolDone:       nil,
	ToolMailSend:   nil,
	ToolMailCheck:  nil,
	ToolEscalate:   nil,
	ToolCheckpoint: nil,

	ToolRigsList:     {RoleMayor},
	ToolBeadsList:    {RoleMayor},
	ToolAgentsList:   {RoleMayor},
	ToolSling:        {RoleMayor},
	ToolBeadUpdate:   {RoleMayor},
	ToolConvoyCreate: {RoleMayor},
	ToolConvoyStatus: {RoleMayor},

	ToolReviewComplete: {RoleRefinery},
	ToolTriageResolve:  {RoleTriage},
}

// MayCall reports whether an agent of role may call method.
func MayCall(role, method string) bool {
	roles, ok := ToolRoles[method]
	if !ok || ValidateRole(role) != nil {
		return false
	}
	return len(roles) == 0 || slices.Contains(roles, role)
}

// ToolsFor lists the methods an agent of role may call, in the order of
// Tools.
func ToolsFor(role string) []string {
	var out []string
	for _, m := range Tools {
		if MayCall(role, m) {
			out = append(out, m)
		}
	}
	return out
}

// FinishingTool is the tool that ends an agent's work on its hook: done
// for a polecat, review.complete for the refinery, triage.resolve for a
// triage agent. The mayor has none: it works until it is stopped.
func FinishingTool(role string) string {
	switch role {
	case RolePolecat:
		return ToolDone
	case RoleRefinery:
		return ToolReviewComplete
	case RoleTriage:
		return ToolTriageResolve
	}
	return ""
}

// PolecatBranch is the branch a polecat's workspace is cloned on for the
// bead on its hook, and the one it pushes and names in done.
func PolecatBranch(agentID, beadID string) string {
	return fmt.Sprintf("polecat/%s/%s", agentID, beadID)
}

// AgentTools are the tools offered to an agent of role, to a model (the
// MCP server's list, the briefing's): ToolsFor less ping, which proves a
// token and is the container's business.
func AgentTools(role string) []string {
	return slices.DeleteFunc(ToolsFor(role), func(m string) bool { return m == ToolPing })
}
