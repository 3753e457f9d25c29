from automlp.cli import main

main()
