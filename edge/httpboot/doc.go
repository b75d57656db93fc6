// Package httpboot is the edge's HTTP side of the boot chain: it renders the
// iPXE script (and the GRUB config, for the shim/GRUB Secure Boot path) for
// each MAC from the desired state, serves image artifacts through the cache
// and iPXE bootstrap binaries from a local directory, and takes installer
// callbacks. The TFTP server asks it the same questions: ArtifactFor (which
// artifact artifacts/<image>/<file> names, and whether this site serves it)
// and LookupTFTP (the iPXE script and GRUB config of the machine leased the
// request's source address).
//
// Rendering is a pure function, Render(Input) (Script, error): the same input
// always gives the same script and Decision, which is what events and
// `fleetboot explain` show. Everything from user input that reaches a script
// (hostname, host variables, the image's command line) is validated with the
// proto validators; values are never escaped into scripts, they are refused.
//
// Command-line templates take {{mac}}, {{hostname}}, {{ip}}, {{site}},
// {{edge}} (this edge's base URL), {{image}} and {{var.NAME}}; any other name
// is an error at render time. The edge appends BOOTIF=01-aa-bb-cc-dd-ee-ff
// (unless the image's command line sets BOOTIF itself) so installers pick the
// NIC that booted.
package httpboot
