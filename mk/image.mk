# The local test image: Debian's static busybox imported as shoal-test/busybox:latest
# (no registry is reachable from test machines). `cargo test` builds the same image on its
# own through shoal-agent's test-support helpers.

TEST_IMAGE ?= shoal-test/busybox:latest
BUSYBOX ?= /bin/busybox
BUSYBOX_APPLETS := sh sleep httpd wget true false cat echo ls env kill ps printf test nc id mkdir rm touch date hostname

.PHONY: image
image:
	@if docker image inspect $(TEST_IMAGE) >/dev/null 2>&1; then \
		echo "$(TEST_IMAGE) is present"; \
	else \
		set -e; \
		if [ ! -x $(BUSYBOX) ]; then \
			if [ "$$(id -u)" = 0 ]; then apt-get install -y busybox-static; \
			else sudo apt-get install -y busybox-static; fi; \
		fi; \
		dir=$$(mktemp -d); \
		mkdir -p $$dir/rootfs/bin $$dir/rootfs/tmp $$dir/rootfs/etc $$dir/rootfs/www; \
		cp $(BUSYBOX) $$dir/rootfs/bin/busybox; \
		for a in $(BUSYBOX_APPLETS); do ln -s busybox $$dir/rootfs/bin/$$a; done; \
		echo 'root:x:0:0:root:/:/bin/sh' > $$dir/rootfs/etc/passwd; \
		echo 'shoal test image' > $$dir/rootfs/index.html; \
		echo 'shoal test image' > $$dir/rootfs/www/index.html; \
		tar -C $$dir/rootfs -cf $$dir/rootfs.tar .; \
		docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' $$dir/rootfs.tar $(TEST_IMAGE); \
		rm -rf $$dir; \
		echo "built $(TEST_IMAGE)"; \
	fi

# The image whose tasks can resolve names: the busybox rootfs plus Debian's dynamically linked
# wget and getent, the libraries ldd lists, glibc's resolver modules and nsswitch.conf.
# Call the clients by full path (/usr/bin/wget): busybox sh prefers its own applets.
RESOLVER_IMAGE ?= shoal-test/resolver:latest
RESOLVER_CLIENTS := /usr/bin/wget /usr/bin/getent
RESOLVER_LIBS := libnss_dns.so.2 libnss_files.so.2 libresolv.so.2

.PHONY: resolver-image
resolver-image:
	@if docker image inspect $(RESOLVER_IMAGE) >/dev/null 2>&1; then \
		echo "$(RESOLVER_IMAGE) is present"; \
	else \
		set -e; \
		dir=$$(mktemp -d); \
		mkdir -p $$dir/rootfs/bin $$dir/rootfs/tmp $$dir/rootfs/etc $$dir/rootfs/www; \
		cp $(BUSYBOX) $$dir/rootfs/bin/busybox; \
		for a in $(BUSYBOX_APPLETS); do ln -s busybox $$dir/rootfs/bin/$$a; done; \
		echo 'root:x:0:0:root:/:/bin/sh' > $$dir/rootfs/etc/passwd; \
		echo 'shoal test image' > $$dir/rootfs/index.html; \
		echo 'shoal test image' > $$dir/rootfs/www/index.html; \
		libdir=$$(dirname $$(ldd /usr/bin/getent | awk '/libc.so.6/ {print $$3}')); \
		for f in $(RESOLVER_CLIENTS) $$(ldd $(RESOLVER_CLIENTS) | awk '/=> \// {print $$3} /^\t\// {print $$1}' | sort -u) \
			$$(for l in $(RESOLVER_LIBS); do echo $$libdir/$$l; done); do \
			mkdir -p $$dir/rootfs$$(dirname $$f); cp -L $$f $$dir/rootfs$$f; \
		done; \
		echo 'hosts: files dns' > $$dir/rootfs/etc/nsswitch.conf; \
		tar -C $$dir/rootfs -cf $$dir/rootfs.tar .; \
		docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' $$dir/rootfs.tar $(RESOLVER_IMAGE); \
		rm -rf $$dir; \
		echo "built $(RESOLVER_IMAGE)"; \
	fi
