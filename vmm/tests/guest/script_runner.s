# Real-mode (unreal: the test gives DS a 4 GiB limit) script runner for
# vmm/tests/virtio_mmio_guest.rs, which embeds the assembled bytes. Rebuild with:
#   as --32 -o x.o script_runner.s && objcopy -O binary -j .text x.o x.bin
# Runs the ops at 0x40000 (16 bytes each: op, addr, value, mask), appending every
# observed dword to the log at 0x9000; powers off (ACPI S5) at op 0.
#   1: dword [addr] = value    2: word [addr] = value    3: log dword [addr]
#   4: poll until dword [addr] & mask == value (bounded), then log dword [addr]
.code16
.intel_syntax noprefix
start:
  mov esi, 0x40000
  mov edi, 0x9000
next:
  mov eax, dword ptr [esi]
  mov ebx, dword ptr [esi+4]
  mov ecx, dword ptr [esi+8]
  mov edx, dword ptr [esi+12]
  add esi, 16
  cmp al, 1
  je w32
  cmp al, 2
  je w16
  cmp al, 3
  je record
  cmp al, 4
  je poll
  mov dx, 0x3c0
  mov al, 0x34
  out dx, al
  hlt
w32:
  mov dword ptr [ebx], ecx
  jmp next
w16:
  mov word ptr [ebx], cx
  jmp next
poll:
  mov ebp, 0x100000
again:
  mov eax, dword ptr [ebx]
  and eax, edx
  cmp eax, ecx
  je record
  dec ebp
  jnz again
record:
  mov eax, dword ptr [ebx]
  mov dword ptr [edi], eax
  add edi, 4
  jmp next
