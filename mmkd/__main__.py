from mmkd.cli import main

raise SystemExit(main())
