"""The protocols the service speaks, side by side on one core: ours, OpenRLHF's, vLLM's and TEI's."""
