from site_node.cli import main

main()
