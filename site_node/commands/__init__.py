"""site-node sub-commands, one module each (registered in site_node.cli.COMMANDS)."""
