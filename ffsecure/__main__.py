from ffsecure.cli import main

main()
