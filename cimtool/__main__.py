from cimtool.cli import main

main()
