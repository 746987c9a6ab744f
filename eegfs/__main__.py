from eegfs.cli import main

main()
